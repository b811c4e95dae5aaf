"""The local application API: CBOR messages on a Unix socket (spec/appapi.md).

:mod:`dcis.dtn.appapi.wire` holds the framing and message validation (sans-I/O);
the server lives in :mod:`dcis.dtn.runtime`, the clients in :mod:`dcis.dtn.client`.
"""
