"""Kallikratis: one VM per municipality on libvirt, configured by Ansible."""

__version__ = "0.1.0"
