//! memaudit-attacks (under construction).
