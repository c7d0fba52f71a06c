"""dappdeps: build a small Linux distribution from source into /.dapp/deps prefixes.

The framework lives here; recipes/ holds data and dodo.py wires the stages.
"""
