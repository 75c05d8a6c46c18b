"Speed comparisons: each `bench_<area>.py` times aacnb against a reference implementation in the same run and prints ratios."
