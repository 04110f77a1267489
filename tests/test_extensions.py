"""surveylm_jax/extensions.py: user modules named in config.extra_modules, and `config.loss` open to
names a user module registers while every other config key stays locked. Configs are parsed here
as the launch/ mains parse them (config_flags, lock_config=True, command-line overrides)."""
import os

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import pipeline_tiny, tiny
from surveylm_jax import extensions
from surveylm_jax.cli import ConfigError
from surveylm_jax.train import two_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(*overrides, config="configs/tiny.py"):
  argv = ["prog", f"--config={os.path.join(REPO, config)}", *overrides]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  return holder.value


def test_a_new_loss_name_parses_and_is_checked_against_the_registry():
  config = _parse("--config.extra_modules=my_pkg.losses", "--config.loss.letter_entropy=0.1")
  assert config.is_locked and config.extra_modules == ("my_pkg.losses",)
  assert config.loss.to_dict() == {"token_ce": 1.0, "letter_entropy": 0.1}
  # Nothing registered `letter_entropy` in this process: the start-up check names it and lists
  # the registered losses.
  with pytest.raises(ValueError, match=r"config\.loss: unknown loss 'letter_entropy'; registered: "
                                       r"option_kl, option_w1, .*token_ce"):
    extensions.check_config(config)


@pytest.mark.parametrize("typo", ["--config.trian.steps=2", "--config.train.stpes=2",
                                  "--config.eval.readoutt=generate", "--config.extra_module=my_pkg"])
def test_every_other_config_key_stays_locked(typo):
  with pytest.raises((KeyError, AttributeError, flags.Error), match="Did you mean"):
    _parse(typo)


def test_the_loss_section_stays_open_however_it_is_replaced():
  # From the command line as a dict literal, then one more name.
  config = _parse("--config.loss={'token_ce': 0.5, 'option_kl': 1.0}", "--config.loss.option_w1=0.25")
  assert isinstance(config.loss, extensions.LossWeights)
  assert config.loss.to_dict() == {"token_ce": 0.5, "option_kl": 1.0, "option_w1": 0.25}
  extensions.check_config(config)
  # configs/demo.py assigns a plain ConfigDict to config.loss in get_config().
  config = _parse("--config.loss.option_w1=0.5", config="configs/demo.py")
  assert config.loss.to_dict() == {"token_ce": 1.0, "option_kl": 1.0, "option_w1": 0.5}
  assert config.loss.not_named == 0.0   # a loss the config does not name weighs 0


def test_registry_names_in_eval_fail_with_the_registered_names():
  config = tiny.get_config()
  config.eval.readout = "sharpened"
  with pytest.raises(ValueError, match=r"config\.eval\.readout: unknown read-out 'sharpened'; registered: "
                                       r"generate, scoring"):
    extensions.check_config(config)
  config = tiny.get_config()
  config.eval.baselines = ("uniform", "laplace")
  with pytest.raises(ValueError, match=r"unknown baseline 'laplace'; registered: demographics_pooled, "
                                       r"gboost_context, logreg, logreg_context, logreg_year, majority, "
                                       r"marginal, persistence, position_prior, tfidf_transfer, uniform"):
    extensions.check_config(config)
  config = tiny.get_config()
  config.eval.metrics = ("top_share",)
  with pytest.raises(ValueError, match=r"config\.eval\.metrics: unknown metric 'top_share'"):
    extensions.check_config(config)


def test_a_pipeline_stage_may_weight_a_loss_the_base_config_does_not_name():
  config = pipeline_tiny.get_config()
  config.stage2.loss = {"token_ce": 0.0, "option_kl": 1.0}
  stage2 = two_stage.stage_config(config, "stage2")
  assert stage2.loss.to_dict() == {"token_ce": 0.0, "option_kl": 1.0}
  config.stage2.loss = {"letter_entropy": 0.1}
  with pytest.raises(ValueError, match=r"config\.stage2\.loss: unknown loss 'letter_entropy'"):
    extensions.check_config(config)
  with pytest.raises(KeyError, match="stage2.train.stpes: not a config field"):
    config.stage2.train = ml_collections.ConfigDict({"stpes": 3})
    two_stage.stage_config(config, "stage2")


def test_import_modules_by_dotted_name_or_file_path(tmp_path, monkeypatch):
  package = tmp_path / "ext_pkg_for_import_test"
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "counted.py").write_text("import builtins\n"
                                      "builtins.EXT_IMPORTS = getattr(builtins, 'EXT_IMPORTS', 0) + 1\n")
  (tmp_path / "ext_file_for_import_test.py").write_text("VALUE = 42\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  file_path = str(tmp_path / "ext_file_for_import_test.py")
  modules = extensions.import_modules((f"ext_pkg_for_import_test.counted,{file_path}",))
  assert [m.__name__ for m in modules] == ["ext_pkg_for_import_test.counted",
                                           "surveylm_extra_ext_file_for_import_test"]
  assert modules[1].VALUE == 42
  # Imported once per process, however often named (a module registering twice would fail).
  again = extensions.import_modules(["ext_pkg_for_import_test.counted", file_path])
  assert again == modules
  import builtins
  assert builtins.EXT_IMPORTS == 1
  del builtins.EXT_IMPORTS


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match=r"config\.extra_modules: cannot import 'no_such_pkg_xyz\.losses': "
                                        r"ModuleNotFoundError.*PYTHONPATH"):
    extensions.import_modules("no_such_pkg_xyz.losses")
  with pytest.raises(ConfigError, match=r"cannot import '.*missing_file\.py': ImportError: no such file"):
    extensions.import_modules(str(tmp_path / "missing_file.py"))
  (tmp_path / "ext_broken_for_import_test.py").write_text("raise RuntimeError('bad weights table')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ImportError, match=r"cannot import 'ext_broken_for_import_test': RuntimeError: "
                                        r"bad weights table"):
    extensions.import_modules("ext_broken_for_import_test")
