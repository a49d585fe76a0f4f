//! `SparseDataset::batch` copies only the rows it selects. It used to clone the whole CSR matrix
//! per batch (100k-feature IMDB TF-IDF rows: megabytes per step); a counting allocator measures
//! the bytes one batch allocates against the matrix's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use memaudit_engine::SparseInput;
use memaudit_engine::Value;
use memaudit_engine::datasets::SparseDataset;
use memaudit_engine::train::Dataset;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts the bytes requested.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `rows` rows of `per_row` non-zeros each; row r holds features r, r+1, .. with value r.
fn matrix(rows: usize, per_row: usize) -> SparseDataset {
    let mut m = SparseInput {
        dim: rows + per_row,
        row_ptr: vec![0],
        indices: Vec::new(),
        values: Vec::new(),
    };
    for r in 0..rows {
        for k in 0..per_row {
            m.indices.push((r + k) as u32);
            m.values.push(r as f32);
        }
        m.row_ptr.push(m.indices.len());
    }
    SparseDataset {
        rows: m,
        labels: (0..rows as u32).collect(),
    }
}

#[test]
fn a_batch_holds_the_selected_rows_and_copies_only_them() {
    let data = matrix(20_000, 50);
    let matrix_bytes = data.rows.indices.len() * 4 + data.rows.values.len() * 4;
    let before = ALLOCATED.load(Ordering::Relaxed);
    let b = data.batch(&[7, 3, 19_999]);
    let used = ALLOCATED.load(Ordering::Relaxed) - before;
    // Three rows of 50 entries (8 bytes each) plus the row pointers and labels: about 1.3 KB.
    // The old clone allocated the whole matrix (8 MB). Bound: 1% of the matrix.
    assert!(
        used < matrix_bytes / 100,
        "{used} bytes for a 3-row batch of an {matrix_bytes}-byte matrix"
    );
    let Value::Sparse(s) = &b.input else {
        panic!("sparse input expected")
    };
    assert_eq!(s.rows(), 3);
    assert_eq!(s.dim, data.rows.dim);
    for (j, &r) in [7usize, 3, 19_999].iter().enumerate() {
        assert_eq!(s.row(j), data.rows.row(r));
    }
    assert_eq!(b.targets, vec![7, 3, 19_999]);
}
