"""AlignSurvey data: typed readers, survey converter, option shuffling, TFDS/Grain pipelines."""
from surveylm_jax.data.answers import answer_key
from surveylm_jax.data.errors import DataError, ReadReport
from surveylm_jax.data.option_shuffle import permuted_copies, reorder_options, shuffle_options
from surveylm_jax.data.readers import RecordList, read_alignsurvey
from surveylm_jax.data.records import (STANCES, AlignSurveyRecord, DialogueRecord,
                                       GroupDistributionRecord, InterviewRecord, Option,
                                       RecordSource, RoleInferenceRecord, StanceRecord,
                                       SurveyResponseRecord)
from surveylm_jax.data.task_parsers import PARSERS

__all__ = [
    "answer_key", "DataError", "ReadReport", "RecordList", "read_alignsurvey", "STANCES",
    "AlignSurveyRecord", "DialogueRecord", "GroupDistributionRecord", "InterviewRecord", "Option",
    "RecordSource", "RoleInferenceRecord", "StanceRecord", "SurveyResponseRecord", "PARSERS",
    "permuted_copies", "reorder_options", "shuffle_options",
]
