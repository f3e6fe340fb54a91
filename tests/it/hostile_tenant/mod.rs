//! Issue 14's attacks, each starting from what a hostile tenant would do.

mod neighbours;
