"""Loopback stand-ins for the providers we call: real servers on 127.0.0.1, started by a test
(or the dispatch benchmark), that record what they receive and fail on request."""
