//! memaudit-audit (under construction).
