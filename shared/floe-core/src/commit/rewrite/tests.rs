//! The rewrite policy on hand-made file metadata, and carrying floe's summaries forward.

use super::*;
use crate::commit::fixtures::file;

#[test]
fn a_partition_is_rewritten_once_it_has_enough_small_files() {
    let policy = RewritePolicy::of("t", 100, &HashMap::new()).unwrap();
    assert_eq!(policy.min_input_files, DEFAULT_MIN_INPUT_FILES);
    let mut files: Vec<DataFile> = (0..4).map(|i| file(&format!("a{i}"), 1, 10)).collect();
    files.push(file("big", 1, 90));
    files.extend((0..5).map(|i| file(&format!("b{i}"), 2, 10)));
    let bins = policy.bins(&files);
    assert_eq!(bins.len(), 1, "day 1 has four small files, day 2 five");
    assert!(bins[0].iter().all(|&i| files[i].file_path().starts_with('b')));

    let off = RewritePolicy::of("t", 100, &HashMap::from([(MIN_INPUT_FILES.to_string(), "0".to_string())])).unwrap();
    assert!(off.bins(&files).is_empty());
    let two = RewritePolicy::of("t", 100, &HashMap::from([(MIN_INPUT_FILES.to_string(), "2".to_string())])).unwrap();
    assert_eq!(two.bins(&files).len(), 2);
    let bad = RewritePolicy::of("t", 100, &HashMap::from([(MIN_INPUT_FILES.to_string(), "x".to_string())]));
    assert!(bad.unwrap_err().to_string().contains(MIN_INPUT_FILES));
}
