"""The benchmark scripts at tiny sizes."""
