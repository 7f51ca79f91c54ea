"""wg-quick style configuration files (``/etc/wireguard/wg0.conf``): reading them, and checking the files they name.

The text itself is parsed by settings/ini.py (pure, driven by the settings table settings/table.py) and rendered
into a UAPI set request by settings/render.py; both are re-exported here. Only ``load()`` (reads the file and,
through ``check_files()``, the TLS files it names), ``parse()`` (takes relative TLS file names relative to the
config file's directory), ``check_permissions()`` (stats it) and ``find_config()`` (looks for ``NAME.conf``)
touch the file system. Errors are ``ConfigError``s naming file, line and key; never key material.
"""

from __future__ import annotations

import os
import stat
import re

from .settings import ini
from .settings.ini import ConfigError, InterfaceConfig, PeerConfig, interface_name_from_path
from .settings.render import link_uapi, to_uapi, transport_uapi_peer
from .settings.values import parse_pin
from .settings.values import valid_ifname as _valid_name

__all__ = [
    "ConfigError", "PeerConfig", "InterfaceConfig", "parse", "load", "interface_name_from_path",
    "check_permissions", "check_files", "find_config", "parse_pin", "to_uapi", "link_uapi", "transport_uapi_peer",
]

_NAME_RE = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")      # an interface name (quick/down.py checks with it)


def parse(text: str, path: str = "<string>", name: str | None = None) -> InterfaceConfig:
    """Parse configuration text. ``name`` defaults to the stem of ``path`` ("wg0" for "<...>" paths); TLS file
    names are taken relative to the directory of ``path``."""
    base = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else None
    return ini.parse(text, path, name, base)


# where `wgpy up NAME` looks for NAME.conf, in this order: wg-quick's directory first
CONFIG_DIRS = ("/etc/wireguard", "/etc/wgpy")


def find_config(name_or_path: str, search_dirs: tuple[str, ...] = CONFIG_DIRS) -> str:
    """The file `wgpy up` reads. As wg-quick, it takes a path or an interface name: an argument with a '/' or
    ending in ``.conf`` (``./wg0.conf``, ``wg0.conf``) is a path and returned as is; a bare interface name
    (``wg0``) is the first ``DIR/wg0.conf`` that exists, DIR in ``search_dirs``. Raises ConfigError listing
    where it looked when there is none."""
    if "/" in name_or_path or name_or_path.endswith(".conf") or not _valid_name(name_or_path):
        return name_or_path
    tried = [os.path.join(d, f"{name_or_path}.conf") for d in search_dirs]
    for candidate in tried:
        if os.path.lexists(candidate):
            return candidate
    here = f" (for the file {name_or_path} in this directory, write ./{name_or_path})" \
        if os.path.lexists(name_or_path) else ""
    raise ConfigError(name_or_path, None, None,
                      f"no configuration file for interface {name_or_path}: looked for {', '.join(tried)}{here}")


MAX_CONFIG_SIZE = 16 << 20   # bytes: far beyond any real config (100,000 peers fit in about 20 MB of UAPI text)


def load(path: str) -> InterfaceConfig:
    """Read and parse a configuration file, then check the files it names (check_files); unreadable files
    raise ConfigError."""
    try:
        # a regular file of sane size only: /dev/zero would be read until memory runs out, a FIFO would hang
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(path, None, None, "not a regular file (a wg-quick config is a plain file)")
            if st.st_size > MAX_CONFIG_SIZE:
                raise ConfigError(path, None, None, f"too large ({st.st_size} bytes; at most {MAX_CONFIG_SIZE})")
            with os.fdopen(fd, encoding="utf-8-sig", closefd=True) as f:
                fd = -1
                text = f.read(MAX_CONFIG_SIZE + 1)
        finally:
            if fd >= 0:
                os.close(fd)
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, "cannot read: not valid UTF-8") from None
    cfg = parse(text, path)
    check_files(cfg)
    return cfg


def check_permissions(path: str) -> str | None:
    """wg-quick's warning if the file (it holds the private key) is accessible by others (mode & 0o007), and the
    same for its group (mode & 0o070), as `wg` would warn about a key file; else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o007:
        return f"Warning: `{path}' is world accessible"
    if mode & 0o070:
        return f"Warning: `{path}' is group accessible"
    return None


# -------------------------------------------------------------------------------------- TLS transport: files
# load() reads the files the config names, so that a missing, unreadable or wrong one is reported with the line and
# key naming it before anything is set up (the daemon could only answer errno=-22 to the UAPI set). The checks are
# the ones the daemon's ssl calls make (io/stream.py server_context, client_context), done first with the same
# calls; when one fails, the files are examined to say which is wrong and how. Nothing read is ever echoed: a key
# file is a secret.

_PEM_MAX = 1 << 20      # bytes read of one PEM file (a certificate chain is a few KB)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_SWAPPED = "are KeyFile and CertificateFile swapped?"


def check_files(cfg: InterfaceConfig) -> None:
    """Check the TLS files ``cfg`` names: with ListenTLS, CertificateFile and KeyFile (readable, a PEM certificate
    and an unencrypted PEM private key of that certificate); each peer's TLSCAFile (readable, PEM certificates).
    Raises ConfigError naming the config file, the line and the key."""
    if cfg.listen_tls is not None and cfg.certificate_file and cfg.key_file:
        _check_server_files(cfg)
    for peer in cfg.peers:
        if peer.tls_ca_file:
            _check_ca_file(cfg.path, peer)


def _where(where: dict[str, tuple[int, str]], attr: str, key: str) -> tuple[int | None, str]:
    return where.get(attr, (None, key))


def _read_pem(path: str, at: tuple[int | None, str], file: str) -> tuple[bytes, list[bytes]]:
    """The file's bytes and the labels of its PEM blocks ("CERTIFICATE", "PRIVATE KEY", ...)."""
    try:
        with open(file, "rb") as f:
            data = f.read(_PEM_MAX + 1)
    except OSError as e:
        raise ConfigError(path, *at, f"cannot read {file!r}: {e.strerror or e}") from None
    if len(data) > _PEM_MAX:
        raise ConfigError(path, *at, f"{file!r} is too large for a PEM file (over {_PEM_MAX >> 20} MiB)")
    return data, [m.group(1) for m in _PEM_BLOCK.finditer(data)]


def _ssl_reason(e: OSError) -> str:
    reason = getattr(e, "reason", None)
    return reason.lower().replace("_", " ") if isinstance(reason, str) else (e.strerror or str(e))


def _check_server_files(cfg: InterfaceConfig) -> None:
    import ssl
    cert_at = _where(cfg.where, "certificate_file", "CertificateFile")
    key_at = _where(cfg.where, "key_file", "KeyFile")
    cert_file, key_file = cfg.certificate_file, cfg.key_file
    cert_data, cert_labels = _read_pem(cfg.path, cert_at, cert_file)
    key_data, key_labels = _read_pem(cfg.path, key_at, key_file)
    if b"ENCRYPTED PRIVATE KEY" in key_labels or b"Proc-Type: 4,ENCRYPTED" in key_data:
        raise ConfigError(cfg.path, *key_at, f"{key_file!r} is encrypted with a passphrase, which the daemon cannot "
                                             f"ask for; decrypt it: openssl pkey -in {key_file} -out key.pem")
    if not any(label.endswith(b"PRIVATE KEY") for label in key_labels):
        hint = f" (it holds a certificate: {_SWAPPED})" if b"CERTIFICATE" in key_labels else ""
        raise ConfigError(cfg.path, *key_at, f"{key_file!r} is not a PEM private key "
                                             f"(no -----BEGIN PRIVATE KEY----- block){hint}")
    if b"CERTIFICATE" not in cert_labels:
        hint = f" (it holds a private key: {_SWAPPED})" \
            if any(label.endswith(b"PRIVATE KEY") for label in cert_labels) else ""
        raise ConfigError(cfg.path, *cert_at, f"{cert_file!r} is not a PEM certificate "
                                              f"(no -----BEGIN CERTIFICATE----- block){hint}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(cert_file, key_file, password=lambda: b"")   # never a passphrase prompt
        return
    except OSError as e:     # ssl.SSLError included
        reason = _ssl_reason(e)
    raise ConfigError(cfg.path, *_diagnose_server_files(cert_file, cert_data, key_file, key_data,
                                                        cert_at, key_at, reason))


def _diagnose_server_files(cert_file: str, cert_data: bytes, key_file: str, key_data: bytes,
                           cert_at: tuple[int | None, str], key_at: tuple[int | None, str],
                           reason: str) -> tuple[int | None, str, str]:
    """Why ssl refused the pair, as (line, key, message): which file cannot be read as what it should be, or
    that the key is not the certificate's."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_pem = next(m.group(0) for m in _PEM_BLOCK.finditer(key_data) if m.group(1).endswith(b"PRIVATE KEY"))
    cert_pem = next(m.group(0) for m in _PEM_BLOCK.finditer(cert_data) if m.group(1) == b"CERTIFICATE")  # the leaf
    try:
        key = serialization.load_pem_private_key(key_pem, password=None).public_key().public_bytes(*spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return (*key_at, f"{key_file!r}: the private key in it cannot be read (damaged, or of an unsupported type)")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(*spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return (*cert_at, f"{cert_file!r}: the certificate in it cannot be read (damaged, or of an unsupported "
                          f"type)")
    if key != cert:
        line = f", line {cert_at[0]}" if cert_at[0] else ""
        return (*key_at, f"{key_file!r} does not match the certificate {cert_file!r} (CertificateFile{line}): "
                         f"they are not one key pair")
    return (*cert_at, f"{cert_file!r} and {key_file!r} cannot be used for TLS ({reason})")


def _check_ca_file(path: str, peer: PeerConfig) -> None:
    import ssl
    at = _where(peer.where, "tls_ca_file", "TLSCAFile")
    _, labels = _read_pem(path, at, peer.tls_ca_file)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=peer.tls_ca_file)
    except OSError as e:
        hint = "" if labels else " (no -----BEGIN CERTIFICATE----- block)"
        raise ConfigError(path, *at, f"{peer.tls_ca_file!r} is not a file of PEM CA certificates{hint}: "
                                     f"{_ssl_reason(e)}") from None
