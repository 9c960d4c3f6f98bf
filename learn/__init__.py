"""Build each week yourself: `make start-weekN` makes your workspace, `make grade-weekN` grades it.

The grade is the contract suite in tests/contract, the very tests the reference apps pass,
pointed at your code in my/weekN instead.
"""
