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
    license='Apache-2.0',
    packages=find_packages(include=('segsr', 'segsr.*')),
    package_data={'segsr.benchmark_profiles': ['*.yml']},  # read at run time through importlib.resources
    python_requires='>=3.9',
    # Ranges, not pins: the exact versions the test suite passed with are in constraints.txt (README's commands use
    # it). The only upper bound is basicsr: segsr.compat patches internals of its 1.4.2 release.
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.6',  # torch.load(weights_only=True) runs no code from the file only since 2.6 (CVE-2025-32434)
        'torchvision>=0.21',  # the release that goes with torch 2.6
        'opencv-python>=4.5',
        'lmdb>=1.0',
        'numpy>=1.24',
        'pyyaml>=5.4',
        'scipy>=1.9',
        'matplotlib>=3.5',
        'pillow>=9.1',  # palette PNGs of segsr-infer --seg
        'safetensors>=0.4',
        'spandrel>=0.4',  # architecture detection of bare SR checkpoints
        'tqdm>=4.60',
        'torchmetrics>=1.4',  # detection mAP (segsr.metrics.det_metrics): MeanAveragePrecision on pycocotools
        'pycocotools>=2.0.7',  # COCOeval, the backend torchmetrics' mAP runs
    ],
    extras_require={
        'dev': ['pytest>=8', 'open_clip_torch>=2.20', 'lpips>=0.1.4', 'onnx>=1.16', 'onnxruntime>=1.18',
                'onnxscript>=0.3'],
        'clip': ['open_clip_torch>=2.20'],
        # segsr-export: torch's torch.export-based ONNX exporter needs onnxscript; the check runs onnxruntime
        'onnx': ['onnx>=1.16', 'onnxruntime>=1.18', 'onnxscript>=0.3'],
    },
    entry_points={
        'console_scripts': [
            'segsr-train=segsr.train:main',
            'segsr-test=segsr.test:main',
            'segsr-evaluate=segsr.evaluate:main',
            'segsr-srbench=segsr.sr_bench:main',
            'segsr-benchmark=segsr.benchmark:main',
            'segsr-infer=segsr.inference:main',
            'segsr-export=segsr.export:main',
            'segsr-prepare-camvid=segsr.data.camvid:main',
            'segsr-make-synthetic=segsr.data.synthetic:main',
        ],
    },
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Operating System :: OS Independent',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
