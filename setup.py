"""basicsr_ext: TVQ&RAP and AESOP as a plugin for the PyPI basicsr package."""
import importlib.util
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_autoload(build_py):
    """Also put ``basicsr_ext_autoload.pth`` at the top of the build, so that a wheel installs it into
    site-packages (see basicsr_ext/autoload.py). An editable install does not install it: run
    ``python -m basicsr_ext.autoload install`` (the Makefile and the README do)."""

    def _autoload(self):
        spec = importlib.util.spec_from_file_location('_basicsr_ext_autoload',
                                                      os.path.join(HERE, 'basicsr_ext', 'autoload.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # standard library only: no torch or basicsr needed to build
        return module

    def run(self):
        super().run()
        autoload = self._autoload()
        self.mkpath(self.build_lib)
        with open(os.path.join(self.build_lib, autoload.PTH_NAME), 'w', encoding='utf-8') as f:
            f.write(autoload.pth_line())

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, self._autoload().PTH_NAME)]


setup(
    name='basicsr_ext',
    version='0.1.0',
    description='TVQ&RAP and AESOP perceptual super-resolution as BasicSR components',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['basicsr_ext', 'basicsr_ext.*']),
    python_requires='>=3.9',
    # Floors, not pins (requirements.txt pins the tested environment). torch is not forced to a CUDA build:
    # install the torch you want first; torchvision must be the release that matches it.
    install_requires=[
        'torch>=2.1',
        'torchvision>=0.16',
        'basicsr>=1.4.2',
        'numpy>=1.24',
        'opencv-python>=4.8',
        'lmdb>=1.4',
        'pyyaml>=6.0',
        'scikit-image>=0.21',
        'tqdm',
        'matplotlib>=3.7',
    ],
    extras_require={
        'metrics': ['pyiqa>=0.1.13', 'facexlib>=0.3.0', 'setuptools<81'],
        'test': ['pytest>=7', 'pytest-xdist>=3'],
    },
    cmdclass={'build_py': build_py_with_autoload},
    entry_points={'console_scripts': [
        'basicsr-ext-train=basicsr_ext.train:main',
        'basicsr-ext-test=basicsr_ext.test:main',
        'basicsr-ext-infer=basicsr_ext.infer:main',
    ]},
)
