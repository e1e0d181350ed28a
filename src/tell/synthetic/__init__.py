"""A small controlled "leverage world" in which TELL can be tested on a CPU in minutes (`tell demo`)."""
