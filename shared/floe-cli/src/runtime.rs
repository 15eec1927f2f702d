//! What a command runs against: the pipeline (validated and planned) and the backends `--backend` names, opened
//! the same way the Lambda functions open theirs.

use std::sync::Arc;

use floe_backends::{Backend, FunctionSettings, Planning};
use floe_core::{Backends, Compactor, CompactorOptions, Ingestor, Pipeline, Router};

use crate::args::Common;

pub struct Runtime {
    /// The first pipeline: what commands that run one pipeline run.
    pub pipeline: Arc<Pipeline>,
    /// Every pipeline of the deployment, in order.
    pub pipelines: Vec<Arc<Pipeline>>,
    pub backends: Backends,
    /// Where the data lives, for reports.
    pub place: String,
}

impl Runtime {
    /// Open what `common` names. Commands that ingest plan the outputs' SQL; `compact` checks the SQL the same
    /// way, then reads the outputs' columns from the plan ingest recorded, exactly like the compactor function.
    pub async fn open(common: &Common, planning: Planning) -> anyhow::Result<Runtime> {
        #[cfg(feature = "failpoints")]
        common.faults.arm();
        let settings = match common.backend.as_str() {
            "aws" => FunctionSettings { pipeline_files: common.pipeline.clone(), ..FunctionSettings::from_env()? },
            _ => FunctionSettings {
                pipeline_files: common.pipeline.clone(),
                backend: Backend::Embedded { home: common.home.clone() },
            },
        };
        #[allow(unused_mut)]
        let (pipelines, mut backends) = floe_backends::open(&settings, planning).await?;
        let pipeline = pipelines.first().cloned().ok_or_else(|| anyhow::anyhow!("name a pipeline file"))?;
        // The test binary can fail every state-store call on demand (`--fail-at state.<method>`).
        #[cfg(feature = "failpoints")]
        {
            backends.state = Arc::new(floe_core::testing::FaultyState(backends.state));
        }
        let place = match &settings.backend {
            Backend::Embedded { home } => format!("embedded, home {}", home.display()),
            Backend::Aws(aws) => format!("aws, warehouse {}, state table {}", aws.warehouse, aws.state_table),
        };
        Ok(Runtime { pipeline, pipelines, backends, place })
    }

    /// Fail unless the deployment is one pipeline: `command` runs one at a time.
    pub fn single(&self, command: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.pipelines.len() == 1,
            "`floe {command}` runs one pipeline at a time: pass a single --pipeline ({} given)",
            self.pipelines.len()
        );
        Ok(())
    }

    /// Every pipeline's ingestor behind one router, as the ingest function runs them.
    pub async fn router(&self) -> anyhow::Result<Router> {
        Ok(floe_backends::router(&self.pipelines, &self.backends, |k| std::env::var(k).ok()).await?)
    }

    /// A compactor per pipeline.
    pub fn compactors(&self, options: &CompactorOptions) -> anyhow::Result<Vec<Compactor>> {
        let made = self.pipelines.iter().map(|p| Compactor::new(p.clone(), &self.backends, options.clone()));
        Ok(made.collect::<Result<Vec<_>, _>>()?)
    }

    pub async fn ingestor(&self) -> anyhow::Result<Ingestor> {
        let registry = floe_backends::open_registry(&self.pipeline, |k| std::env::var(k).ok()).await?;
        Ok(Ingestor::with_registry(self.pipeline.clone(), &self.backends, registry).await?)
    }

    pub fn compactor(&self) -> anyhow::Result<Compactor> {
        self.compactor_with(CompactorOptions::default())
    }

    pub fn compactor_with(&self, options: CompactorOptions) -> anyhow::Result<Compactor> {
        Ok(Compactor::new(self.pipeline.clone(), &self.backends, options)?)
    }
}
