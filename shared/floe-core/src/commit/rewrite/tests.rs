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

#[test]
fn a_table_with_row_level_deletes_has_no_data_files_to_rewrite() {
    let manifest = |content, added, existing| ManifestFile {
        manifest_path: "m.avro".into(),
        manifest_length: 1,
        partition_spec_id: 0,
        content,
        sequence_number: 1,
        min_sequence_number: 1,
        added_snapshot_id: 1,
        added_files_count: added,
        existing_files_count: existing,
        deleted_files_count: Some(0),
        added_rows_count: None,
        existing_rows_count: None,
        deleted_rows_count: None,
        partitions: None,
        key_metadata: None,
        first_row_id: None,
    };
    let data = manifest(ManifestContentType::Data, Some(3), Some(0));
    assert_eq!(row_delete_manifests(std::slice::from_ref(&data)), 0);
    let deletes = manifest(ManifestContentType::Deletes, Some(1), Some(0));
    assert_eq!(row_delete_manifests(&[data.clone(), deletes]), 1);
    let emptied = manifest(ManifestContentType::Deletes, Some(0), Some(0));
    assert_eq!(row_delete_manifests(&[data, emptied.clone()]), 0, "a delete manifest with no live files");
    let unknown = ManifestFile { added_files_count: None, ..emptied };
    assert_eq!(row_delete_manifests(&[unknown]), 1, "unknown counts are taken as live files");
}
