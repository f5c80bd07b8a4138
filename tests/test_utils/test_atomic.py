"""basicsr_ext.utils.atomic: the one atomic writer (old file or new file, never half of one) and the one lister."""
import os
import stat

import pytest

from basicsr_ext.utils.atomic import atomic_write, write_bytes_atomic, write_text_atomic
from basicsr_ext.utils.image_io import list_images


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'sub' / 'f.txt'
    write_text_atomic(str(path), 'old')

    def broken(tmp):
        with open(tmp, 'w') as f:
            f.write('half')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), broken)
    assert path.read_text() == 'old'
    assert os.listdir(path.parent) == ['f.txt']


def test_new_files_get_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(str(tmp_path / 'a.bin'), b'x', fsync=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / 'a.bin').st_mode) == 0o644
    assert (tmp_path / 'a.bin').read_bytes() == b'x'


def test_one_lister_skips_hidden_files_and_folders(tmp_path):
    for rel in ('b.PNG', 'a.jpg', 'notes.txt', '._a.png', '.b.png.x1.tmp', 'sub/c.webp', '.hidden/d.png'):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b'')
    assert list_images(str(tmp_path)) == [str(tmp_path / 'a.jpg'), str(tmp_path / 'b.PNG')]
    assert list_images(str(tmp_path), recursive=True, relative=True) == ['a.jpg', 'b.PNG', 'sub/c.webp']
    assert list_images(str(tmp_path / 'missing')) == []
