//! Issue 14: each finding as the attack a hostile tenant (or whoever holds
//! one of its credentials) would make, one file per topic.

mod privilege;
