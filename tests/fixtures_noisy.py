"""A user module that prints when it is imported, and its functions."""

print("fixtures_noisy imported")


def numbers(n):
    print("numbers called")
    return range(n)


def identity(item):
    return item
