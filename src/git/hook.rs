//! Parsing what git gives a post-receive hook on stdin: `<old> <new> <ref>` lines.
