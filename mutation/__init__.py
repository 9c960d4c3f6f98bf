"""Mutation testing: how many deliberate bugs in the code do the tests notice?

`make mutate` runs it; README.md in this folder explains how to read the result.
"""
