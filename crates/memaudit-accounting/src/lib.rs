//! memaudit-accounting (under construction).
