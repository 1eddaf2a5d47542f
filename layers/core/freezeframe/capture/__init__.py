"""Captures: pcap and pcapng readers and writers, link-layer constants (one place), and the BPF check.
"""
