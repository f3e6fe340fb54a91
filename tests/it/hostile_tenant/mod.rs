//! Issue 14: Herald tried as a hostile tenant would, one file per finding.

mod fuzz;
