//! commctl: the Commissaire operator CLI. Library part, so the documents it writes can be
//! tested directly.

pub mod userdata;
