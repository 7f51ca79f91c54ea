"""The mesh control plane (docs/mesh.md): a server that registers machines and distributes their peers."""
