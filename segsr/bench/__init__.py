"""The one-command benchmark (``segsr-benchmark``, :mod:`segsr.benchmark`): task-aware SR methods against stock
BasicSR baselines on one labelled dataset.

``segsr-benchmark --profile quick --source <CamVid>`` follows the fine-tuning protocol users follow:

* **Starting points, trained once** and cached under a key derived from their options (``--cache``, default
  ``~/.cache/segsr/benchmark``; reused by every profile, seed and rerun, or given by flag: ``--judge``,
  ``--deployed``, ``--l1-start``): the *judge* (a segmentation network trained on HR images: the H->T row; it scores
  every row and no SR method sees it), the *deployed* segmenter (another seed and architecture: the network a user
  already has; TDP, SeD's semantics, SR4IR's task net and *SR for my segmenter* use it) and an L1 generator (stock
  ``SRModel``).
* **Fine-tuned rows**, each from the L1 start with the same iterations, batch, crop and learning rate
  (``finetune``), one run per seed in ``seeds`` (``seeded_rows``; the others run the first seed): S->T (L1 alone),
  stock ESRGAN (``ESRGANModel`` + ``VGGStyleDiscriminator``), the segmentation-aware GAN, SR4IR, SeD (P+SeD), the
  combination (task branch + SeD + TDP) and *SR for my segmenter* (L1 + cross-entropy through the frozen deployed
  network: ``SR4IRModel`` with ``update_task: false``).

Every row (plus bicubic L->T, HR H->T and the L1 start) is scored on the evaluation split by the judge, by the
deployed network and by each *other-family judge* (``judges.<name>``: a segmenter of another architecture family,
trained once on HR and cached like the judge as step ``judge_<name>``; no SR method sees it) (mIoU from summed
confusion matrices), with the paired block-bootstrap 95% interval of its
difference to S->T of the same seed (:func:`segsr.metrics.paired_block_bootstrap`: blocks of consecutive frames),
the method's own task network where it has one, PSNR/SSIM (Y, ``scale``-pixel border), NIQE and inference time;
each fine-tuning step is timed on a fixed random batch in a fresh process, as a ratio to stock ESRGAN's. Every row is
scored again with LR made by each of ``kernels`` (downsampling methods no row trained on: PSNR/SSIM and every frozen
net), and ``results.md`` ends with one *transfer table* per kernel: each net's difference to S->T and the *transfer
ratio* (mean gain of the other-family judges / the deployed network's gain). ``l1.lq_downsample`` may be a list: the
L1 start's training mix of downsampling methods (one drawn per sample).

Everything else lives in ``--out`` (default ``experiments/<profile name>``): ``options/<step>.yml`` (the generated
BasicSR option files: run any of them with ``segsr-train``), ``runs/<step>_s<seed>/``, ``state/`` (finished work: a
rerun skips it, an interrupted training resumes from its last saved state), ``logs/``, ``results.md``,
``results.json``, ``grid.png`` (LR | each method | HR, judge segmentation under each) and ``miou_vs_psnr.png``.

Profiles (shipped with the package in ``segsr/benchmark_profiles/<name>.yml``, or any YAML path): ``smoke`` (tiny
synthetic data, 2 iterations per step: CI), ``demo`` (synthetic street scenes, every row in minutes on a CPU:
``scripts/demo.sh``), ``quick`` (CamVid on CPU), ``full`` (CamVid on a CUDA GPU, bf16 autocast). CamVid profiles
prepare ``data.root`` from ``--source`` (the SegNet-layout CamVid folder) when it is not prepared yet, and train on
``seq_train`` / score on ``seq_dev`` (video sequences disjoint from training). A profile with ``base: <profile>``
states only what it changes (``rows`` picks fine-tuned rows, ``labels`` renames them: the ablations in
``options/benchmark/``); ``finetune.task_d_warm_start`` adds the cached starting point ``disc`` (SegAwareGAN's
discriminator with its segmentation head trained on HR crops, SegAwareGAN's ``pretrain_network_d``).

The package: :mod:`segsr.bench.profile` (profiles: load, ``base:`` chains, checks), :mod:`segsr.bench.data` (the
dataset), :mod:`segsr.bench.recipes` (the fine-tuned rows: one registered recipe per method),
:mod:`segsr.bench.options` (every step's BasicSR options), :mod:`segsr.bench.predictors` (a row's own task network),
:mod:`segsr.bench.runner` (training, evaluation, timing, state) and :mod:`segsr.bench.report` (the results files).
"""
