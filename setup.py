"""basicsr_ext: TVQ&RAP and AESOP as a plugin for the PyPI basicsr package."""
from setuptools import find_packages, setup

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
    entry_points={'console_scripts': [
        'basicsr-ext-train=basicsr_ext.train:main',
        'basicsr-ext-test=basicsr_ext.test:main',
        'basicsr-ext-infer=basicsr_ext.infer:main',
    ]},
)
