import pytest

from tests.golden_rule import checksum, fill, load_golden


@pytest.mark.parametrize('name', ['aesop_ae', 'tvq_tokenizer', 'tvqrap_sr', 'tvq_discriminator'])
def test_fill_rule_matches_golden_checksum(name):
    golden = load_golden(name)
    sd = fill(golden['manifest'].split('/')[-1])
    assert checksum(sd) == pytest.approx(golden['weights_checksum'], rel=1e-9, abs=1e-6)
