//! Unit tests of the whole stack through its public API (the tables' own tests sit next to them).

mod hold;
mod misc;
mod tcp;
mod udp;
