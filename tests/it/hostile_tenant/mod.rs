//! Attacks a hostile tenant would make, each a test that starts from the
//! attack as the tenant would send it (issue 14).

mod egress;
