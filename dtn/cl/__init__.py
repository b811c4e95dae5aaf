"""Convergence layers: sans-I/O framing and link state (spec/udpcl.md).

- :mod:`dcis.dtn.cl.udp` -- one bundle per UDP datagram (bare, as ION's UDP CL and
  the UDPCL draft send it), plus DCiS hop-by-hop acknowledgement datagrams.
- :mod:`dcis.dtn.cl.mtcp` -- draft-ietf-dtn-mtcpcl: each bundle a CBOR byte string
  on a TCP stream.

These modules never touch a socket or a clock; :mod:`dcis.dtn.runtime` drives them.
"""
