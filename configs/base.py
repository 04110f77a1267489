"""Defaults shared by every experiment config. An experiment file starts from `get_config()` and
changes only what differs; every field can be overridden on the command line
(`--config.train.lr=3e-4`)."""
import ml_collections

from surveylm_jax import compile_cache
from surveylm_jax.extensions import ExperimentConfig


def get_config() -> ml_collections.ConfigDict:
  c = ExperimentConfig()   # keeps `loss` open to registered names (surveylm_jax/extensions.py)
  c.seed = 0
  # The researcher's own modules (dotted names on PYTHONPATH, or .py paths), imported by every
  # launch/ main before a registry is read: they may register losses, read-outs, baselines,
  # metrics and prompt languages (README, "Extending"), e.g.
  #   --config.extra_modules=my_pkg.losses --config.loss.letter_entropy=0.1
  c.extra_modules = ()
  # Compiled programs reused across runs (jax's persistent compilation cache,
  # surveylm_jax/compile_cache.py): every launch/ main turns it on before its first compile, so a
  # second evaluation or training run of the same shapes loads XLA's executables instead of
  # compiling them. "" = off. Default: $SURVEYLM_COMPILE_CACHE if set, else
  # ~/.cache/surveylm_jax/xla ($XDG_CACHE_HOME honoured); `gs://...` works too.
  c.compile_cache = ml_collections.ConfigDict()
  c.compile_cache.dir = compile_cache.default_folder()
  # Programs that compile faster are not written: on a CPU a cache read costs ~20 ms, as much as
  # compiling the smallest programs (jax's own default, 1 s, would skip some 0.7 s scoring programs).
  c.compile_cache.min_compile_secs = 0.2

  # Model: an HF folder, or a random tiny model when `random_init` holds an HF-style config dict.
  c.model = ml_collections.ConfigDict()
  c.model.path = "checkpoints/smollm2-135m-instruct"
  c.model.dtype = "float32"              # param dtype: float32 | bfloat16
  c.model.compute_dtype = "float32"      # matmul dtype: float32 | bfloat16
  c.model.remat_policy = "none"          # none | full | dots_saveable | ...
  c.model.attention = "xla"              # xla | splash (TPU) | cudnn (GPU) | auto
  c.model.random_init = ml_collections.ConfigDict()   # empty = load c.model.path
  c.model.tokenizer = ""                 # default: c.model.path

  # LoRA (SurveyLM recipe: rank 8, alpha 16, all seven projections).
  c.lora = ml_collections.ConfigDict()
  c.lora.enabled = True
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.dropout = 0.0
  c.lora.use_rslora = False
  c.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
  c.lora.init_from = ""                  # a PEFT adapter folder to start from (Stage I adapter)
  c.lora.stacking = "continue"           # continue | merge_then_fresh
  c.lora.train_top_layers = 0            # > 0: only the top N layers' adapters train; the layers
                                         # below run forward only (no backward pass through them)

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.train = ""                      # AlignSurvey JSON/JSONL file(s) or tfds:alignsurvey/CONFIG:SPLIT, comma separated
  c.data.eval = ""
  c.data.tfds_manual_dir = ""            # the AlignSurvey release's JSON folder (for tfds: sources)
  c.data.tfds_data_dir = ""              # where TFDS writes the ArrayRecord build (default ~/tensorflow_datasets)
  c.data.lenient = False
  c.data.allow_empty = False             # True: a data file with no records is read as empty, not an error
  c.data.seq_len = 512
  c.data.batch_size = 8                  # global batch (rows)
  c.data.pack = True
  c.data.share_prefixes = False          # pack a respondent's background once for many questions
  c.data.max_group_members = 0           # > 0: at most this many questions share one packed background
  c.data.shuffle_options = False         # option-order augmentation for training
  c.data.group_answers = "text"          # group records: text (token loss on the shares) | distribution
                                         # (no token loss; the shares as the option losses' target)
  c.data.max_records = -1                # -1 = all
  c.data.question_catalog = ""           # YAML file(s) of canonical option orders (comma separated);
                                         # see surveylm_jax/data/question_catalog.py

  # Training.
  c.train = ml_collections.ConfigDict()
  c.train.steps = 100
  c.train.epochs = 0                     # > 0: steps derived from the data, overrides steps
  c.train.lr = 1e-4
  c.train.warmup_fraction = 0.1
  c.train.weight_decay = 0.0
  c.train.grad_clip = 1.0
  c.train.adam_eps = 1e-8
  c.train.microbatches = 1
  c.train.loss_positions = 0             # > 0: logits only at this many loss-read positions per row
  c.train.cache_lower_layers = 0         # > 0 (with lora.train_top_layers): this many batches
                                         # through the frozen layers once; steps cycle over them
  c.train.full_finetune = False
  c.train.log_every = 10
  c.train.eval_every = 0                 # 0 = only at the end
  c.train.eval_batches = 4

  # Losses and their weights (registry keys in surveylm_jax.train.losses; a weight of 0 or a name
  # not given = off). Any registered name may be added, also from the command line.
  c.loss = {"token_ce": 1.0}

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 100
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  # Mesh: one axis may be -1 (takes the remaining devices).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # Logical axis -> mesh axes. Parallelism is changed here, never in code.
  c.sharding_rules = (
      ("activation_batch", ("data", "fsdp")),
      ("activation_length", None),
      ("activation_embed", "tensor"),
      ("layers", None),
      ("vocab", "tensor"),
      ("embed", "fsdp"),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("head_dim", None),
      ("mlp", "tensor"),
      ("lora_rank", None),
  )

  # Evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.data = ""                       # AlignSurvey test file(s); default c.data.eval
  c.eval.max_records = -1                # > 0: each kind of record scored (individual, group prompts,
                                         # position-bias copies, each of tasks 1-3) capped at this
  c.eval.question_catalog = ""           # default: c.data.question_catalog
  c.eval.batch_size = 16
  c.eval.readout = "scoring"             # scoring | generate | a registered read-out
  c.eval.baselines = ("uniform", "majority", "marginal", "logreg")   # or registered ones
  c.eval.metrics = ()                    # registered metrics (eval/extra_metrics.py) to add
  c.eval.train_data = ""                 # task-4 training records the baselines fit on
  # Task-4 VALIDATION records (e.g. task4/individual/validation.json: training-side respondents
  # never trained on) to fit one temperature on (eval/calibration.py); the model is then also
  # reported temperature-scaled, as predictor "model_calibrated". Never a test file, never a test
  # respondent (both refused). eval.max_records caps it too. "" = no calibration.
  c.eval.calibration_data = ""
  c.eval.max_respondents = -1            # > 0: a seeded sample of test respondents (all their records)
  c.eval.group_prompts = True            # also score the group-prompt records directly
  c.eval.adapter = ""                    # a PEFT adapter folder merged into the model for eval
  c.eval.prefix_reuse = True             # option scoring runs shared prompt prefixes once (KV reuse)
  c.eval.pack_length = 256               # question tokens per packed row (scoring)
  c.eval.pack_rows = 8                   # packed rows per forward pass (scoring)
  c.eval.length_step = 16                # scoring pads lengths to multiples of this (few compiles)
  c.eval.max_new_tokens = 16             # generate read-out
  # Tasks 1-3 (free text / JSON answers, always generated): new-token limit per task; 0 = the
  # default measured on the release's answers (eval.generated_tasks.DEFAULT_MAX_NEW_TOKENS).
  c.eval.max_new_tokens_task = ml_collections.ConfigDict({"task1": 0, "task2": 0, "task3": 0})
  c.eval.noise_floor_draws = 200         # bootstrap resamples per group
  c.eval.position_bias_records = 100     # records scored under every option order (0 = skip)
  c.eval.subgroups = ("auto",)            # profile conditions, or auto: rural / oldest / lowest income found in the data
  c.eval.subgroup_columns = ("auto",)     # profile fields, or auto: every field with few values
  c.eval.fairness_min_records = 20
  # Optional LLM judge of task-2 answers (any OpenAI-compatible endpoint); off by default.
  c.eval.judge = ml_collections.ConfigDict()
  c.eval.judge.enabled = False
  c.eval.judge.base_url = ""             # e.g. http://localhost:8000/v1
  c.eval.judge.model = ""
  c.eval.judge.api_key_env = ""          # name of the environment variable holding the key
  c.eval.judge.max_records = 200
  c.eval.judge.timeout_s = 60.0
  return c
