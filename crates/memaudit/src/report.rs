//! Self-contained HTML reports: the library's [`memaudit_experiments::report`] (moved there so
//! that the audit pipeline's report stage can write one), re-exported under its old path.

pub use memaudit_experiments::report::*;
