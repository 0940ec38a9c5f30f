"""beadm: boot environments for Proxmox VE hosts whose root is on ZFS."""

__version__ = "0.1.0"
