//! memaudit-data (under construction).
