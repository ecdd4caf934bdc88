//! `cnnc run FILE`: train a model on its dataset, with the training block's
//! settings overridden by flags.

use super::common::{
    ConvArgs, DataArgs, EngineKind, Failure, SetArgs, dataset, engine, fraction, ignored_note, in_model, load,
    positive, run_folder,
};
use super::transfer::{FreezeArgs, frozen, loaded_note};
use crate::parse::ast::{Activation, Loss, Optimizer};
use crate::runtime::data::{Selection, Splits};
use crate::runtime::engine::Graphs;
use crate::runtime::optim::compact;
use crate::runtime::train::{self, Ending, Files, Report, Settings};
use crate::shape::Checked;
use clap::ValueEnum;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    Sgd,
    Adam,
    Rmsprop,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    #[command(flatten)]
    train: TrainFlags,
    /// Seed of the initial weights, the shuffles and the dropout masks [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Folder for the run's files; they go in OUT/<model name>/ (and in
    /// OUT/<model name>/<parameter=value,...>/ for a model with parameters)
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Continue the run in its folder from its last checkpoint
    #[arg(long)]
    resume: bool,
    /// Start over in a folder that holds a run, replacing it
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Start from the weights of this safetensors file whose Keras names and
    /// shapes match the model's (another model's, a Keras export); the other
    /// weights start from their initializers
    #[arg(long, value_name = "WEIGHTS")]
    init: Option<PathBuf>,
    /// With --init: start weights whose shape differs from the file's from
    /// their initializers, rather than refuse the file (Keras's skip_mismatch)
    #[arg(long, requires = "init")]
    skip_mismatch: bool,
    /// At most N training samples of each class, drawn with the seed
    /// (validation and test data are kept whole)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    per_class: Option<u32>,
    #[command(flatten)]
    freeze: FreezeArgs,
    #[command(flatten)]
    data: DataArgs,
}

/// The training block's settings that a flag overrides, for `run` and
/// `compare`.
#[derive(clap::Args)]
pub struct TrainFlags {
    /// Epochs to train [default: the training block's, else 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: Option<u32>,
    /// Samples per step [default: the training block's, else 32]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// Optimizer, with Keras's defaults [default: the training block's, else adam]
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerName>,
    /// Learning rate [default: the optimizer's]
    #[arg(long, value_parser = positive)]
    lr: Option<f64>,
    /// Fraction of the training data (its last samples) kept for validation
    #[arg(long, value_parser = fraction)]
    validation_split: Option<f64>,
    /// Early stopping: epochs without a better val_loss before stopping;
    /// the best weights are restored
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    patience: Option<u32>,
}

impl TrainFlags {
    /// The settings of a run of `checked` in `out_dir`: each flag, else the
    /// training block's setting, else Keras's default.
    pub fn settings(&self, checked: &Checked, seed: Option<u64>, out_dir: PathBuf, resume: bool) -> Settings {
        let block = checked.model.train.clone().unwrap_or_default();
        let mut optimizer = match (self.optimizer, block.optimizer) {
            (Some(OptimizerName::Sgd), Some(o @ Optimizer::Sgd { .. })) => o,
            (Some(OptimizerName::Adam), Some(o @ Optimizer::Adam { .. })) => o,
            (Some(OptimizerName::Rmsprop), Some(o @ Optimizer::Rmsprop { .. })) => o,
            (Some(OptimizerName::Sgd), _) => Optimizer::SGD,
            (Some(OptimizerName::Adam), _) => Optimizer::ADAM,
            (Some(OptimizerName::Rmsprop), _) => Optimizer::RMSPROP,
            (None, o) => o.unwrap_or(Optimizer::ADAM),
        };
        if let Some(lr) = self.lr {
            optimizer = optimizer.with_learning_rate(lr);
        }
        Settings {
            optimizer,
            batch_size: self.batch.map(|b| b as usize).or(block.batch_size).unwrap_or(32),
            epochs: self.epochs.map(|e| e as usize).or(block.epochs).unwrap_or(1),
            seed: seed.or(block.seed).unwrap_or(0),
            patience: self.patience.map(|p| p as usize).or(block.patience),
            augment: block.augment,
            validation_split: self.validation_split.or(block.validation_split),
            out_dir,
            resume,
            force: false,
            initial: None,
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: RunArgs) -> Result<String, Failure> {
    if let (true, Some(init)) = (args.resume, &args.init) {
        return Err(Failure::new(format!(
            "--init and --resume cannot be used together: --resume continues a run from its own checkpoint, \
             optimizer state included, while --init starts a new run from `{}`\n  = help: drop --resume to start \
             over from those weights, or drop --init to continue the run",
            init.display()
        )));
    }
    let checked = frozen(load(&args.file, &args.set)?, &args.freeze)?;
    let out_dir = run_folder(&args.out, &checked.model, None);
    let mut settings = args.train.settings(&checked, args.seed, out_dir, args.resume);
    settings.force = args.force;
    // The weights before the data: a file that does not fit fails fast.
    let graphs = Graphs::new(&checked, &settings.optimizer).map_err(in_model(&checked))?;
    if let Some(path) = &args.init {
        let fresh = crate::runtime::initial_weights(&checked, settings.seed);
        let initial = train::initial_from(path, &graphs, fresh, args.skip_mismatch).map_err(in_model(&checked))?;
        print!(
            "{}{}",
            loaded_note(&checked, path, &initial.starts),
            ignored_note(path, &initial.ignored)
        );
        settings.initial = Some(initial.values);
    }
    let selection = Selection {
        classes: args.data.classes.clone(),
        per_class: args.per_class.map(|n| n as usize),
        seed: settings.seed,
    };
    let splits = dataset(
        &checked,
        &args.file,
        args.data.data.as_deref(),
        settings.validation_split,
        &selection,
    )?;
    let report = train_run(
        &checked,
        &graphs,
        &splits,
        &settings,
        args.data.engine,
        &args.data.conv,
        &mut std::io::stdout(),
    )?;
    let files = Files::new(&settings.out_dir);
    let mut out = String::new();
    if let Some(t) = &report.test {
        out += &format!("test: loss {:.4}", t.loss);
        if !t.accuracy.is_nan() {
            out += &format!(" - accuracy {:.4}", t.accuracy);
        }
        out += &format!(" ({} samples)\n", t.n);
    }
    if report.ending == Ending::Interrupted {
        return Err(Failure::Interrupted);
    }
    out += &format!(
        "wrote {}, {} and {}\n",
        files.weights.display(),
        files.metrics.display(),
        files.plot.display()
    );
    Ok(out)
}

/// Trains one run, saying first what it trains and how: what `run` does
/// once its flags are read, and `compare` for each of its runs. Ctrl-C
/// stops it after the current step, saved.
pub(super) fn train_run(
    checked: &Checked,
    graphs: &Graphs,
    splits: &Splits,
    settings: &Settings,
    kind: EngineKind,
    conv: &ConvArgs,
    out: &mut dyn Write,
) -> Result<Report, Failure> {
    let mut engine = engine(kind, conv, graphs);
    // The first Ctrl-C stops after the current step and saves; a second
    // exits at once, which every write being atomic makes safe: each file is
    // whole, and the checkpoint is one of them. (Set once: a comparison's
    // later runs find it set.)
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::Relaxed) {
            std::process::exit(i32::from(super::INTERRUPTED));
        }
    });
    let _ = writeln!(out, "{}", start_line(checked, splits, settings));
    if let Some(augment) = &settings.augment {
        let _ = writeln!(out, "augmenting the training images: {}", augment.text());
    }
    train::train(checked, splits, settings, graphs, engine.as_mut(), out, &|| {
        INTERRUPTED.load(Ordering::Relaxed)
    })
    .map_err(in_model(checked))
}

/// What a run trains, on what, with which loss and how.
fn start_line(checked: &Checked, splits: &Splits, settings: &Settings) -> String {
    let model = &checked.model;
    let variant = match model.params.is_empty() {
        true => String::new(),
        false => format!(" ({})", model.values().join(", ")),
    };
    let loss = checked.loss();
    let accuracy = match loss {
        Loss::MeanSquaredError if matches!(checked.output_activation(), Activation::Softmax | Activation::Sigmoid) => {
            ", no accuracy (the training block's loss is a regression's)"
        }
        Loss::MeanSquaredError => ", no accuracy (the output has no softmax or sigmoid: a regression)",
        Loss::CategoricalCrossentropy | Loss::BinaryCrossentropy => "",
    };
    format!(
        "training `{}`{variant} on {} samples ({} classes) with {}{accuracy}, {} epochs of batch {}, {}, seed {}",
        model.name,
        splits.train.len(),
        splits.classes.len(),
        loss.name(),
        settings.epochs,
        settings.batch_size,
        describe(&settings.optimizer),
        settings.seed
    )
}

fn describe(o: &Optimizer) -> String {
    let settings = match o {
        Optimizer::Sgd {
            learning_rate,
            momentum,
            nesterov,
        } => format!(
            "learning_rate {}, momentum {momentum}, nesterov {nesterov}",
            compact(*learning_rate)
        ),
        Optimizer::Adam {
            learning_rate,
            beta_1,
            beta_2,
            epsilon,
        } => format!(
            "learning_rate {}, beta_1 {beta_1}, beta_2 {beta_2}, epsilon {}",
            compact(*learning_rate),
            compact(*epsilon)
        ),
        Optimizer::Rmsprop {
            learning_rate,
            rho,
            momentum,
            epsilon,
            centered,
        } => format!(
            "learning_rate {}, rho {rho}, momentum {momentum}, epsilon {}, centered {centered}",
            compact(*learning_rate),
            compact(*epsilon)
        ),
    };
    format!("{} ({settings})", o.name())
}
