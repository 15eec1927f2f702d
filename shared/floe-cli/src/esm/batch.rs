//! One invocation's worth of records from one partition, sized the way the MSK event source mapping sizes it:
//! at most `batch_size` records and at most the 6 MB invocation payload, counted on the exact JSON the function
//! receives (base64 values make a record about 4/3 of its Kafka size).

use floe_core::{MskEvent, MskRecord};

/// Lambda's synchronous invocation payload limit, which caps every mapping batch.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// The largest `BatchSize` a Kafka event source mapping accepts.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Where the event says it came from (`eventSourceArn`, `bootstrapServers`).
#[derive(Debug, Clone)]
pub struct Origin {
    pub event_source_arn: String,
    pub bootstrap_servers: String,
}

/// What happened to a record offered to a batch.
#[derive(Debug, PartialEq)]
pub enum Push {
    Added,
    /// The batch is full (record count or payload); the record belongs to the next batch.
    Full(Box<MskRecord>),
    /// The record alone exceeds the payload limit: no batch can ever carry it.
    TooLarge(Box<MskRecord>),
}

#[derive(Debug)]
pub struct Batch {
    envelope: MskEvent,
    key: String,
    records: Vec<MskRecord>,
    /// Serialized size of the envelope with an empty record list.
    base_bytes: usize,
    /// Serialized size of the records, without separators.
    record_bytes: usize,
    max_records: usize,
    max_bytes: usize,
}

impl Batch {
    pub fn new(origin: &Origin, topic: &str, partition: i32, max_records: usize, max_bytes: usize) -> Batch {
        let key = format!("{topic}-{partition}");
        let mut envelope = MskEvent {
            event_source: Some("aws:kafka".into()),
            event_source_arn: Some(origin.event_source_arn.clone()),
            bootstrap_servers: Some(origin.bootstrap_servers.clone()),
            records: Default::default(),
        };
        envelope.records.insert(key.clone(), Vec::new());
        let base_bytes = serde_json::to_vec(&envelope).expect("an MSK event always serializes").len();
        Batch {
            envelope,
            key,
            records: Vec::new(),
            base_bytes,
            record_bytes: 0,
            max_records: max_records.max(1),
            max_bytes,
        }
    }

    /// Payload size for `n` records of `record_bytes` in total: the envelope, the records, and n-1 commas.
    fn size_with(&self, n: usize, record_bytes: usize) -> usize {
        self.base_bytes + record_bytes + n.saturating_sub(1)
    }

    pub fn push(&mut self, record: MskRecord) -> Push {
        let bytes = serde_json::to_vec(&record).expect("an MSK record always serializes").len();
        if self.size_with(1, bytes) > self.max_bytes {
            return Push::TooLarge(Box::new(record));
        }
        let n = self.records.len() + 1;
        if n > self.max_records || self.size_with(n, self.record_bytes + bytes) > self.max_bytes {
            return Push::Full(Box::new(record));
        }
        self.records.push(record);
        self.record_bytes += bytes;
        Push::Added
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Exact size of [`Batch::payload`].
    pub fn payload_bytes(&self) -> usize {
        self.size_with(self.records.len(), self.record_bytes)
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_records
    }

    pub fn first_offset(&self) -> Option<i64> {
        self.records.first().map(|r| r.offset)
    }

    pub fn last_offset(&self) -> Option<i64> {
        self.records.last().map(|r| r.offset)
    }

    /// The invocation payload: an MSK event with this partition's records. Retries send these same bytes.
    pub fn payload(mut self) -> Vec<u8> {
        self.envelope.records.insert(self.key, self.records);
        serde_json::to_vec(&self.envelope).expect("an MSK event always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            event_source_arn: "arn:aws:kafka:us-east-1:000000000000:cluster/local/floe".into(),
            bootstrap_servers: "127.0.0.1:9092".into(),
        }
    }

    fn record(offset: i64, value_len: usize) -> MskRecord {
        MskRecord {
            topic: Some("clicks".into()),
            partition: 2,
            offset,
            timestamp: 1_763_676_000_123,
            timestamp_type: Some("CREATE_TIME".into()),
            key: Some("a2V5".into()),
            value: Some("x".repeat(value_len)),
            headers: vec![[("trace-id".to_string(), vec![97, -61])].into_iter().collect()],
            malformed: None,
        }
    }

    #[test]
    fn payload_size_is_exact() {
        let mut batch = Batch::new(&origin(), "clicks", 2, 100, MAX_PAYLOAD_BYTES);
        assert_eq!(batch.payload_bytes(), Batch::new(&origin(), "clicks", 2, 100, MAX_PAYLOAD_BYTES).payload().len());
        for i in 0..7 {
            assert_eq!(batch.push(record(10 + i, 100 + i as usize * 37)), Push::Added);
        }
        let expected = batch.payload_bytes();
        let payload = batch.payload();
        assert_eq!(payload.len(), expected);
        let event: MskEvent = serde_json::from_slice(&payload).unwrap();
        let records = &event.records["clicks-2"];
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (10..17).collect::<Vec<_>>());
        assert_eq!(event.event_source.as_deref(), Some("aws:kafka"));
    }

    #[test]
    fn full_by_record_count() {
        let mut batch = Batch::new(&origin(), "clicks", 2, 3, MAX_PAYLOAD_BYTES);
        for i in 0..3 {
            assert_eq!(batch.push(record(i, 10)), Push::Added);
        }
        assert!(batch.is_full());
        assert_eq!(batch.push(record(3, 10)), Push::Full(Box::new(record(3, 10))));
        assert_eq!((batch.first_offset(), batch.last_offset(), batch.len()), (Some(0), Some(2), 3));
    }

    #[test]
    fn full_by_payload_bytes_and_never_over_the_limit() {
        let limit = 10_000;
        let mut batch = Batch::new(&origin(), "clicks", 2, MAX_BATCH_SIZE, limit);
        let mut offset = 0;
        loop {
            match batch.push(record(offset, 900)) {
                Push::Added => offset += 1,
                Push::Full(r) => {
                    assert_eq!(r.offset, offset);
                    break;
                }
                Push::TooLarge(_) => panic!("a 900-byte record fits in 10 kB"),
            }
        }
        assert!(batch.len() >= 9, "{} records", batch.len());
        assert!(batch.payload_bytes() <= limit);
        // One more record would have crossed it.
        let with_next = batch.payload_bytes() + 1 + serde_json::to_vec(&record(offset, 900)).unwrap().len();
        assert!(with_next > limit);
        assert!(batch.payload().len() <= limit);
    }

    #[test]
    fn a_record_larger_than_the_payload_limit_is_refused_alone() {
        let mut batch = Batch::new(&origin(), "clicks", 2, 100, 5_000);
        assert!(matches!(batch.push(record(0, 5_000)), Push::TooLarge(_)));
        assert!(batch.is_empty());
        assert_eq!(batch.push(record(1, 100)), Push::Added);
    }
}
