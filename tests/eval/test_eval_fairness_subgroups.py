"""Fairness subgroups found in the data: the paper's rural / oldest / lowest-income groups where
their fields exist (English and Chinese), every field with few values, numeric conditions."""
import pytest

from surveylm_jax.eval import fairness

GSS = [{"sex": s, "age group": a, "yearly income": i, "rural resident": r, "age": n, "id": str(k)}
       for k, (s, a, i, r, n) in enumerate([
           ("male", "18-29", "under $20,000", "no", 23), ("female", "76 and over", "$90,000 or more", "yes", 80),
           ("female", "30-44", "$20,000 to $49,999", "no", 40), ("male", "60-75", "$50,000 to $89,999", "yes", 66),
           ("male", "45-59", "$20,000 to $49,999", "no", 50), ("female", "18-29", "under $20,000", "no", 19),
           ("female", "30-44", "$50,000 to $89,999", "no", 31), ("male", "45-59", "$90,000 or more", "no", 47),
           ("female", "60-75", "under $20,000", "yes", 70), ("male", "76 and over", "under $20,000", "no", 85)])]
CHIP = [{"居住地区": r, "您的年龄": n, "家庭年收入": i, "您的性别": s}
        for r, n, i, s in [("农村", 58, "5万以下", "女"), ("城镇", 34, "5万-20万", "男"),
                           ("农村", 71, "20万-50万", "男"), ("城镇", 45, "5万以下", "女"),
                           ("城镇", 66, "100万以上", "女"), ("农村", 29, "50万-100万", "男")]]


def test_english_profiles_give_the_papers_groups_and_few_valued_columns():
  conditions, columns = fairness.default_subgroups(GSS)
  assert "rural resident=yes" in conditions
  assert "age group=76 and over" in conditions
  assert "yearly income=under $20,000" in conditions
  assert "age>=65" in conditions
  assert set(columns) == {"sex", "age group", "yearly income", "rural resident"}   # not age, not id


def test_chinese_profiles_give_the_papers_groups():
  conditions, columns = fairness.default_subgroups(CHIP)
  assert conditions == ["居住地区=农村", "您的年龄>=65", "家庭年收入=5万以下"]
  assert set(columns) == {"居住地区", "家庭年收入", "您的性别"}
  tags = [fairness.subgroup_tags(p, conditions, columns) for p in CHIP]
  assert "您的年龄>=65" in tags[2] and "您的年龄>=65" not in tags[0]
  assert "居住地区=农村" in tags[0] and "家庭年收入=5万以下" in tags[3]


def test_non_agricultural_hukou_is_not_rural():
  profiles = [{"您目前的户口性质": v} for v in ("农业户口", "非农业户口", "居民户口")]
  assert fairness.default_subgroups(profiles)[0] == ["您目前的户口性质=农业户口"]


def test_auto_is_replaced_and_explicit_values_are_kept():
  conditions, columns = fairness.resolve_subgroups(CHIP, ("auto",), ("您的性别",))
  assert "居住地区=农村" in conditions and columns == ["您的性别"]
  conditions, columns = fairness.resolve_subgroups(CHIP, ("您的年龄<=40",), ("auto",))
  assert conditions == ["您的年龄<=40"] and "居住地区" in columns


@pytest.mark.parametrize("spec", ["age", "age>=old", "=x"])
def test_bad_subgroup_specs_say_the_forms(spec):
  with pytest.raises(ValueError, match="field=value|needs a number"):
    fairness.parse_subgroup(spec)
