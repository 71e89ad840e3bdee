//! Ray-shaped interfaces (see issue 5 for the plugin layer).
