#!/usr/bin/env python
"""Install segsr: task-aware image super-resolution on BasicSR."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    scope = {}
    with open(os.path.join(HERE, 'segsr', 'version.py'), encoding='utf-8') as f:
        exec(f.read(), scope)  # plain assignment of __version__
    return scope['__version__']


with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='segsr',
    version=read_version(),
    description='Task-aware image super-resolution (segmentation-aware GAN, SR4IR, SeD) as a BasicSR extension',
    long_description=long_description,
    long_description_content_type='text/markdown',
    keywords='computer vision, super-resolution, semantic segmentation, basicsr',
    url='https://github.com/segsr/segsr',
    license='Apache License 2.0',
    packages=find_packages(exclude=('tests', 'tests.*', 'scripts', 'options')),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.0',
        'torchvision>=0.15',
        'opencv-python',
        'lmdb',
        'numpy',
        'pyyaml',
        'scipy',
        'matplotlib',
    ],
    extras_require={
        'dev': ['pytest>=7', 'open_clip_torch', 'lpips'],
        'clip': ['open_clip_torch'],
    },
    entry_points={
        'console_scripts': [
            'segsr-train=segsr.train:main',
            'segsr-test=segsr.test:main',
            'segsr-evaluate=segsr.evaluate:main',
            'segsr-srbench=segsr.sr_bench:main',
            'segsr-benchmark=segsr.benchmark:main',
        ],
    },
    classifiers=[
        'Development Status :: 3 - Alpha',
        'License :: OSI Approved :: Apache Software License',
        'Operating System :: OS Independent',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
