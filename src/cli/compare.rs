//! `cnnc compare FILE... [--grid NAME=V1,V2,...]...`: trains every variant
//! of a model (each combination of the grid's values), or several models,
//! with several seeds on the same data and splits, and puts the results
//! side by side: a table (text, markdown, JSON) and one picture of the
//! validation curves.
//!
//! Each run has its own folder and is an ordinary run (`cnnc eval` reads
//! its weights). A run a folder already holds is continued through the
//! resume machinery: a finished one is reused as it is, an interrupted one
//! continues where it stopped, and one of another model or other data is
//! refused. So an interrupted comparison goes on where it stopped when the
//! same command is given again.
//!
//! Given run folders instead of model files, it trains nothing and draws
//! the runs' validation curves in one picture: runs made by separate
//! commands (a transferred model and one trained from scratch) side by side.

use super::common::{DataArgs, Failure, SetArgs, dataset, file_name, in_model, load_variant, run_folder};
use super::run::{TrainFlags, train_run};
use crate::parse::params::CommandLine;
use crate::runtime::comparison::{Comparison, Run, Variant, label};
use crate::runtime::data::{Selection, Splits};
use crate::runtime::engine::Graphs;
use crate::runtime::metrics::EpochMetrics;
use crate::runtime::plot::{Curves, write_comparison};
use crate::runtime::train::{self, Ending, Files};
use crate::shape::Checked;
use clap::ValueEnum;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Text,
    Markdown,
    Json,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The model files (.cnn): one, whose variants the grid makes, or
    /// several, compared with each other (and each with the grid). Or run
    /// folders (of `cnnc run --out`), whose curves are drawn together
    /// without training anything; `A+B` joins the folders of a run trained
    /// in stages (B started from A's weights) into one curve
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// A parameter and the values to compare, written as in the model file
    /// (`--grid act=relu,sigmoid,tanh`); several grids combine, every value
    /// of each with every value of the others
    #[arg(long, value_name = "NAME=V1,V2,...")]
    grid: Vec<String>,
    #[command(flatten)]
    set: SetArgs,
    /// Runs per variant, with seeds 1, 2, ..., N
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    seeds: u32,
    #[command(flatten)]
    train: TrainFlags,
    /// Folder for the runs (OUT/<model>/<parameter=value,...,seed=N>/) and
    /// the comparison's table and picture
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Train every run again, replacing the runs OUT holds (without it, a
    /// finished run is reused and an interrupted one continued)
    #[arg(long)]
    force: bool,
    /// How the table is printed; it is also written as markdown and JSON
    #[arg(long, value_enum, default_value_t = TableFormat::Text)]
    format: TableFormat,
    #[command(flatten)]
    data: DataArgs,
}

/// A variant to train: a model file with one combination of values.
struct Planned<'a> {
    file: &'a Path,
    checked: Checked,
    cells: Vec<String>,
}

pub fn run(args: CompareArgs) -> Result<String, Failure> {
    if args.files.iter().any(|f| stages(f).iter().all(|s| s.is_dir())) {
        return overlay(&args);
    }
    let line = CommandLine::parse(&args.set.set, &args.grid)?;
    let columns: Vec<String> = (args.files.len() > 1)
        .then(|| "model".to_string())
        .into_iter()
        .chain(line.grid.iter().map(|a| a.name.text.clone()))
        .collect();
    // Every variant is checked before the first one trains: a value that
    // fits one model of the grid and not another fails now, not in an hour.
    let mut planned = Vec::new();
    for file in &args.files {
        for overrides in line.variants() {
            let checked = load_variant(file, &overrides)?;
            let mut cells: Vec<String> = (args.files.len() > 1)
                .then(|| checked.model.name.clone())
                .into_iter()
                .collect();
            for axis in &line.grid {
                let value = checked.model.params.iter().find(|p| p.name == axis.name.text);
                cells.extend(value.map(|p| p.value.clone()));
            }
            planned.push(Planned { file, checked, cells });
        }
    }
    distinct_models(&planned)?;

    let seeds: Vec<u64> = (1..=u64::from(args.seeds)).collect();
    let total = planned.len() * seeds.len();
    // Progress on stdout, unless stdout is to be JSON alone.
    let mut say: Box<dyn Write> = match args.format {
        TableFormat::Json => Box::new(std::io::stderr()),
        _ => Box::new(std::io::stdout()),
    };
    let _ = writeln!(
        say,
        "comparing {} variant{} x {} seed{} = {total} runs in {}",
        planned.len(),
        plural(planned.len()),
        seeds.len(),
        plural(seeds.len()),
        args.out.display()
    );
    let mut data: Vec<(DataKey, Splits)> = Vec::new();
    let mut variants = Vec::new();
    let mut done = 0;
    for plan in &planned {
        let model = &plan.checked.model;
        let label = label(&columns, &plan.cells, &model.name);
        let mut runs = Vec::new();
        for &seed in &seeds {
            done += 1;
            let dir = run_folder(&args.out, model, Some(seed));
            let probe = args.train.settings(&plan.checked, Some(seed), dir.clone(), false);
            let graphs = Graphs::new(&plan.checked, &probe.optimizer).map_err(in_model(&plan.checked))?;
            let held = match args.force {
                true => None,
                false => train::held(&Files::new(&dir), &graphs),
            };
            let settings = train::Settings {
                resume: held.is_some(),
                force: args.force,
                ..probe
            };
            let splits = splits(&mut data, plan, &args, settings.validation_split)?;
            let _ = write!(say, "[{done}/{total}] {label}, seed {seed}: ");
            let _ = say.flush();
            // The run's own lines are in its folder's files; its notes are
            // worth seeing here.
            let mut log = Vec::new();
            let report = train_run(
                &plan.checked,
                &graphs,
                splits,
                &settings,
                args.data.engine,
                &args.data.conv,
                &mut log,
            )
            .map_err(|f| in_run(&dir, f))?;
            let log = String::from_utf8_lossy(&log);
            if report.ending == Ending::Interrupted {
                let _ = writeln!(
                    say,
                    "interrupted\n{done} of {total} runs started: the same command continues the comparison \
                     (finished runs are reused, this one continues at its next step)"
                );
                return Err(Failure::Interrupted);
            }
            let run = Run {
                seed,
                folder: dir,
                epochs: report.epochs,
                test: report.test.as_ref().map(|t| (t.loss, t.accuracy)),
            };
            let reused =
                held.is_some_and(|h| h.step.is_none() && h.epoch.is_some_and(|e| e as usize >= settings.epochs));
            let _ = writeln!(say, "{}{}", run_line(&run), if reused { " (reused)" } else { "" });
            for note in log.lines().filter(|l| l.starts_with("note:")) {
                let _ = writeln!(say, "  {note}");
            }
            runs.push(run);
        }
        variants.push(Variant {
            cells: plan.cells.clone(),
            model: model.name.clone(),
            params: model.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect(),
            weights: plan.checked.weights().map(|w| w.numel()).sum(),
            accuracy: train::has_accuracy(&plan.checked),
            runs,
        });
    }
    let comparison = Comparison { columns, variants };
    write_results(&args, &line, &comparison)
}

/// Draws the validation curves of the run folders `args.files` in one
/// picture, each run a variant of its own, and prints each run's scores.
fn overlay(args: &CompareArgs) -> Result<String, Failure> {
    if let Some(file) = args.files.iter().find(|f| !stages(f).iter().all(|s| s.is_dir())) {
        return Err(Failure::new(format!(
            "`{}` {}, and the others are run folders\n  = help: compare model files (which it trains) or run \
             folders (whose curves it draws), not both",
            file.display(),
            if file.exists() {
                "is not a folder"
            } else {
                "does not exist"
            }
        )));
    }
    if !args.grid.is_empty() || !args.set.set.is_empty() {
        return Err(Failure::new(
            "run folders are compared as they are: `--grid` and `--set` apply to model files\n  = help: give the \
             model files to train their variants"
                .to_string(),
        ));
    }
    let mut out = String::new();
    let mut curves = Vec::new();
    // The legend names each run by what sets its folders apart.
    let staged: Vec<Vec<PathBuf>> = args.files.iter().map(|f| stages(f)).collect();
    let mut parts = distinct_parts(&staged.concat()).into_iter();
    let mut stems = Vec::new();
    for (arg, folders) in args.files.iter().zip(&staged) {
        let mut epochs = Vec::new();
        let mut names = Vec::new();
        for dir in folders {
            let metrics = crate::runtime::metrics::read(&Files::new(dir).metrics).map_err(|e| {
                Failure::new(format!(
                    "{e}\n  = help: a run folder is one `cnnc run` wrote (`--out`), holding its metrics.jsonl"
                ))
            })?;
            let before = epochs.len() as u64;
            epochs.extend(metrics.into_iter().map(|m| EpochMetrics {
                epoch: m.epoch + before,
                ..m
            }));
            names.push(parts.next().unwrap_or_default());
        }
        let run = Run {
            seed: 0,
            folder: folders.first().cloned().unwrap_or_default(),
            epochs,
            test: None,
        };
        let label = arg.display().to_string().trim_end_matches('/').to_string();
        out.push_str(&format!("{label}: {}\n", run_line(&run)));
        curves.push(Curves {
            label: names.iter().map(|n| n.join("/")).collect::<Vec<_>>().join(" + "),
            runs: vec![run.epochs],
        });
        stems.push(names.iter().map(|n| n.join("_")).collect::<Vec<_>>().join("+"));
    }
    let path = args.out.join(format!("{}.png", file_name(&stems.join("-vs-"))));
    let title = format!("{} runs", curves.len());
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::new(format!("cannot create `{}`: {e}", args.out.display())))?;
    write_comparison(&path, &title, &curves).map_err(|e| Failure::new(e.to_string()))?;
    out.push_str(&format!("wrote {}\n", path.display()));
    Ok(out)
}

/// The folders of one curve: `runs/head/m+runs/finetune/m` is one run in
/// two stages (a head trained, then the whole network from its weights),
/// drawn as one curve whose epochs count on.
fn stages(arg: &Path) -> Vec<PathBuf> {
    match arg.is_dir() {
        true => vec![arg.to_path_buf()],
        false => arg.to_string_lossy().split('+').map(PathBuf::from).collect(),
    }
}

/// Each folder's path without the leading folders all share: `transfer`
/// and `scratch` of `runs/transfer` and `runs/scratch`.
fn distinct_parts(folders: &[PathBuf]) -> Vec<Vec<String>> {
    let parts: Vec<Vec<String>> = folders
        .iter()
        .map(|f| f.iter().map(|p| p.to_string_lossy().into_owned()).collect())
        .collect();
    let shortest = parts.iter().map(Vec::len).min().unwrap_or(0);
    let shared = (0..shortest.saturating_sub(1))
        .take_while(|&i| parts.iter().all(|p| p[i] == parts[0][i]))
        .count();
    parts.into_iter().map(|p| p[shared..].to_vec()).collect()
}

/// The key of a loaded dataset: variants that agree on it share one load.
#[derive(PartialEq)]
struct DataKey {
    dir: PathBuf,
    block: Option<String>,
    input: Vec<usize>,
    outputs: usize,
    split: Option<u64>,
}

/// The variant's data, loaded once for all variants that read the same.
fn splits<'a>(
    loaded: &'a mut Vec<(DataKey, Splits)>,
    plan: &Planned,
    args: &CompareArgs,
    split: Option<f64>,
) -> Result<&'a Splits, Failure> {
    let checked = &plan.checked;
    let key = DataKey {
        dir: plan.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        block: checked.model.train.as_ref().and_then(|t| t.data.clone()),
        input: checked.model.input.shape.clone(),
        outputs: checked.output_shape().iter().product(),
        split: split.map(f64::to_bits),
    };
    let at = match loaded.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            let selection = Selection {
                classes: args.data.classes.clone(),
                ..Default::default()
            };
            let splits = dataset(checked, plan.file, args.data.data.as_deref(), split, &selection)?;
            loaded.push((key, splits));
            loaded.len() - 1
        }
    };
    Ok(&loaded[at].1)
}

/// A run's failure, named by its folder, with the ways on of a comparison
/// rather than those of `cnnc run`.
fn in_run(dir: &Path, failure: Failure) -> Failure {
    match failure {
        Failure::Message(m) => {
            let message = m.split("\n  = help:").next().unwrap_or(&m);
            Failure::new(format!(
                "the run in `{}`: {message}\n  = help: `--force` trains every run of the comparison again, or \
                 `--out DIR` compares in another folder",
                dir.display()
            ))
        }
        other => other,
    }
}

/// Two files of one model name would share their run folders.
fn distinct_models(planned: &[Planned]) -> Result<(), Failure> {
    for (i, a) in planned.iter().enumerate() {
        if let Some(b) = planned[..i]
            .iter()
            .find(|b| b.file != a.file && b.checked.model.name == a.checked.model.name)
        {
            return Err(Failure::new(format!(
                "`{}` and `{}` both name their model `{}`, and the runs of a model are named after it\n  = help: give \
                 one of them another name with a `model NAME` line",
                b.file.display(),
                a.file.display(),
                a.checked.model.name
            )));
        }
    }
    Ok(())
}

/// `a`, `a and b`, `a, b and c`.
fn and(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What a finished run of a comparison printed: its scores and time.
fn run_line(run: &Run) -> String {
    let mut parts = Vec::new();
    match run.test {
        Some((_, accuracy)) if accuracy.is_finite() => parts.push(format!("test accuracy {accuracy:.4}")),
        Some((loss, _)) => parts.push(format!("test loss {loss:.4}")),
        None => {}
    }
    let best = run.best_val_accuracy().map(|b| ("val_accuracy", b));
    if let Some((what, (epoch, value))) = best.or_else(|| run.best_val_loss().map(|b| ("val_loss", b))) {
        parts.push(format!("best {what} {value:.4} (epoch {epoch})"));
    }
    let epochs = run.epochs.len();
    parts.push(format!("{epochs} epoch{} in {:.1} s", plural(epochs), run.seconds()));
    parts.join(", ")
}

/// Prints the table, writes it as markdown and JSON beside the picture.
fn write_results(args: &CompareArgs, line: &CommandLine, comparison: &Comparison) -> Result<String, Failure> {
    let mut models: Vec<&str> = comparison.variants.iter().map(|v| v.model.as_str()).collect();
    models.dedup();
    let grid: Vec<&str> = line.grid.iter().map(|a| a.name.text.as_str()).collect();
    let title = match grid.is_empty() {
        true => models.join(" vs "),
        false => format!("{} by {}", models.join(" vs "), and(&grid)),
    };
    let stem = match grid.is_empty() {
        true => file_name(&models.join("-")),
        false => file_name(&format!("{}-by-{}", models.join("-"), grid.join("-"))),
    };
    let path = |ext: &str| args.out.join(format!("{stem}.{ext}"));
    let fail = |e: crate::runtime::checkpoint::FileError| Failure::new(e.to_string());
    let markdown = comparison.markdown();
    let json = format!("{:#}\n", comparison.json());
    crate::runtime::checkpoint::write_atomic(&path("md"), markdown.as_bytes()).map_err(fail)?;
    crate::runtime::checkpoint::write_atomic(&path("json"), json.as_bytes()).map_err(fail)?;
    let curves: Vec<Curves> = comparison
        .variants
        .iter()
        .map(|v| Curves {
            label: label(&comparison.columns, &v.cells, &v.model),
            runs: v.runs.iter().map(|r| r.epochs.clone()).collect(),
        })
        .collect();
    write_comparison(&path("png"), &title, &curves).map_err(|e| Failure::new(e.to_string()))?;
    let table = match args.format {
        TableFormat::Text => comparison.text(),
        TableFormat::Markdown => markdown,
        TableFormat::Json => return Ok(json),
    };
    Ok(format!(
        "\n{table}\nwrote {}, {} and {}\n",
        path("md").display(),
        path("json").display(),
        path("png").display()
    ))
}
