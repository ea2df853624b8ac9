//! Integration tests: a real server on port 0, real clients over real sockets.

mod smoke;
