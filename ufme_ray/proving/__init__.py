"""The proving suite: fault injection (chaos), hostile input, steady load and scale, run against a
real service. Scripts under scripts/ are thin command lines over these modules; the test suite runs
their quick versions. Needs the `[dev]` extra (schemathesis).
"""
