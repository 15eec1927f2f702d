//! Races on the embedded default: a compactor that loses a commit race to another compactor committing the same
//! files, and the same MSK event delivered twice at once. Both must end with every row exactly once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use floe_cli::{Generated, GeneratorOptions, generate, readback};
use floe_core::{Compactor, CompactorOptions, Ingestor, Pipeline, StateStore, TableLayout};
use floe_embedded::Embedded;
use futures::future::BoxFuture;
use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

fn pipeline() -> Arc<Pipeline> {
    let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../examples/pipeline.toml");
    Arc::new(floe_core::load_pipeline(&path).unwrap())
}

fn compactor(p: &Arc<Pipeline>, b: &Embedded, catalog: Arc<dyn Catalog>) -> Compactor {
    let backends = floe_core::Backends { catalog, ..b.backends() };
    Compactor::new(p.clone(), &backends, CompactorOptions::default()).unwrap()
}

/// Rows in the target and dead-letter tables.
async fn table_rows(p: &Pipeline, b: &Embedded) -> (usize, usize) {
    let mut counts = [0; 2];
    for (i, layout) in
        [TableLayout::target(p, &b.warehouse), TableLayout::dead_letter(p, &b.warehouse)].into_iter().enumerate()
    {
        let table = b.catalog.load_table(&layout.unwrap().ident()).await.unwrap();
        counts[i] = readback::count_rows(&table).await.unwrap();
    }
    (counts[0], counts[1])
}

/// A catalog that lets another committer in after this compactor planned its commit: at the first reload of a
/// table it already loaded (iceberg-rust's refresh inside `Transaction::commit`) or, failing that, right before
/// the metadata swap. Either way the rival commits the very files this compactor planned to commit.
struct Racing {
    inner: Arc<dyn Catalog>,
    loads: Mutex<HashMap<TableIdent, usize>>,
    rival: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl Racing {
    async fn let_rival_in(&self) {
        let rival = self.rival.lock().unwrap().take();
        if let Some(rival) = rival {
            rival.await;
        }
    }
}

impl std::fmt::Debug for Racing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Racing").field("inner", &self.inner).finish_non_exhaustive()
    }
}

#[async_trait]
impl Catalog for Racing {
    async fn list_namespaces(&self, p: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(p).await
    }
    async fn create_namespace(&self, n: &NamespaceIdent, p: HashMap<String, String>) -> Result<Namespace> {
        self.inner.create_namespace(n, p).await
    }
    async fn get_namespace(&self, n: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(n).await
    }
    async fn namespace_exists(&self, n: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(n).await
    }
    async fn update_namespace(&self, n: &NamespaceIdent, p: HashMap<String, String>) -> Result<()> {
        self.inner.update_namespace(n, p).await
    }
    async fn drop_namespace(&self, n: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(n).await
    }
    async fn list_tables(&self, n: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(n).await
    }
    async fn create_table(&self, n: &NamespaceIdent, c: TableCreation) -> Result<Table> {
        self.inner.create_table(n, c).await
    }
    async fn load_table(&self, t: &TableIdent) -> Result<Table> {
        let reload = {
            let mut loads = self.loads.lock().unwrap();
            let n = loads.entry(t.clone()).or_default();
            *n += 1;
            *n > 1
        };
        if reload {
            self.let_rival_in().await;
        }
        self.inner.load_table(t).await
    }
    async fn drop_table(&self, t: &TableIdent) -> Result<()> {
        self.inner.drop_table(t).await
    }
    async fn purge_table(&self, t: &TableIdent) -> Result<()> {
        self.inner.purge_table(t).await
    }
    async fn table_exists(&self, t: &TableIdent) -> Result<bool> {
        self.inner.table_exists(t).await
    }
    async fn rename_table(&self, s: &TableIdent, d: &TableIdent) -> Result<()> {
        self.inner.rename_table(s, d).await
    }
    async fn register_table(&self, t: &TableIdent, l: String) -> Result<Table> {
        self.inner.register_table(t, l).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.let_rival_in().await;
        self.inner.update_table(commit).await
    }
}

/// An embedded home with `records` generated records ingested (or only generated, with `ingest = false`).
async fn setup(
    records: usize,
    bad_every: usize,
    ingest: bool,
) -> (tempfile::TempDir, Embedded, Arc<Pipeline>, Generated, Arc<Ingestor>) {
    let dir = tempfile::tempdir().unwrap();
    let b = Embedded::open(dir.path()).await.unwrap();
    let p = pipeline();
    let generated = generate(&GeneratorOptions { records, bad_every, ..Default::default() });
    let ingestor = Arc::new(Ingestor::new(p.clone(), &b.backends()).await.unwrap());
    if ingest {
        for event in &generated.events {
            ingestor.handle(event).await.unwrap();
        }
    }
    (dir, b, p, generated, ingestor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_commit_race_replans_instead_of_appending_twice() {
    let (_dir, b, p, generated, _) = setup(4_000, 500, true).await;
    let rival = compactor(&p, &b, b.catalog.clone());
    let racing = Racing {
        inner: b.catalog.clone(),
        loads: Mutex::new(HashMap::new()),
        rival: Mutex::new(Some(Box::pin(async move {
            let reports = rival.run().await.unwrap();
            assert!(reports[0].snapshot_id.is_some(), "the rival commits first");
        }))),
    };
    let reports = compactor(&p, &b, Arc::new(racing)).run().await.unwrap();
    let target = &reports[0];
    assert_eq!(target.conflicts, 1, "{target:?}");
    assert_eq!(target.snapshot_id, None, "nothing left to commit after re-planning: {target:?}");
    assert_eq!(target.files, 0);
    assert!(target.recovered > 0);

    let table = b.catalog.load_table(&TableLayout::target(&p, &b.warehouse).unwrap().ident()).await.unwrap();
    assert_eq!(table.metadata().snapshots().count(), 1);
    assert_eq!(table_rows(&p, &b).await, (generated.good(), generated.bad.len()));
    assert!(b.state.staged_files(&p.table.name.to_string()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_delivered_twice_at_once_stages_once() {
    let (_dir, b, p, generated, ingestor) = setup(3_000, 300, false).await;
    for event in &generated.events {
        let (a, c) = tokio::join!(ingestor.handle(event), ingestor.handle(event));
        let (a, c) = (a.unwrap(), c.unwrap());
        // Each record is staged by exactly one of the two deliveries.
        assert_eq!(a.rows + a.dead_letters + c.rows + c.dead_letters, a.records);
        assert_eq!(a.duplicates + c.duplicates, a.records);
    }
    compactor(&p, &b, b.catalog.clone()).run().await.unwrap();
    assert_eq!(table_rows(&p, &b).await, (generated.good(), generated.bad.len()));
}
