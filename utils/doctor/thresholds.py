"""The doctor's thresholds: every number a rule compares against, each with the reason for its value.

Kept apart from the rules so that the numbers can be read (and tuned) in one place and the tests
can refer to them by name.
"""

# Smoothing of the per-step training loss: a bias-corrected exponentially weighted average with
# this factor (about a 10-step window), as the LR range test smooths its curve.
LOSS_SMOOTHING = 0.9
# Divergence: the smoothed loss exceeds this multiple of its best so far. The LR range test's
# stop rule (fastai) uses 4x: past it, the loss does not come back.
DIVERGE_FACTOR = 4.0
# ... and it must also have risen by at least this fraction of the starting loss: near zero loss
# 0.01 -> 0.05 is 5x but only mini-batch noise, not divergence.
DIVERGE_MIN_RISE = 0.25
# Oscillation, measured over the last OSC_WINDOW_FRACTION of the steps (at least
# OSC_MIN_STEPS): the step-to-step noise (std of the first differences / sqrt 2, which a smooth
# trend hardly affects) above OSC_RATIO x the loss level means the updates overshoot ...
OSC_WINDOW_FRACTION = 1 / 3
OSC_MIN_STEPS = 30
OSC_RATIO = 0.5
# ... when the noise is also large in absolute terms (this fraction of the starting loss): at a
# loss near zero mini-batch noise is large relative to the level but harmless.
OSC_MIN_NOISE = 0.1
# Plateau: neither the val loss nor the val accuracy improved for this many evaluations
# (LRScheduler.patience's default is 5 too) ...
PLATEAU_EVALS = 5
# ... an improvement being a relative loss decrease above this (0.1%) or any accuracy increase.
PLATEAU_MIN_DELTA = 1e-3
# Accuracy rules look at the last ACC_EVALS evaluations (one or two can be chance by luck).
ACC_EVALS = 3
# "At chance": the accuracy a majority-class guesser gets plus two binomial standard errors of
# a val set of that size (95% of chance-level runs fall below), at least ACC_CHANCE_MIN_MARGIN.
ACC_CHANCE_SIGMAS = 2.0
ACC_CHANCE_MIN_MARGIN = 0.02
# Train/val loss patterns: trends over the last PATTERN_WINDOW evaluations (at least
# PATTERN_MIN_EVALS). A least-squares line whose change over the window is within TREND_FLAT of
# the mean level is "flat": epoch-to-epoch val loss noise on digits is ~1-2%.
PATTERN_WINDOW = 5
PATTERN_MIN_EVALS = 3
TREND_FLAT = 0.03
# ... and a move smaller than this fraction of ln(num_classes) is flat whatever its relative size:
# a training loss near zero going 0.001 -> 0.002 is +100% but nothing.
TREND_MIN_ABS = 0.01
# Val loss this far (5%) above its best at the last two evaluations, the best being earlier, counts as rising even when the
# window's line is flat.
VAL_RISE = 0.05
# "Still high" for a loss: above this fraction of the chance-level loss ln(num_classes). Both
# flat above it = a bottleneck; below it = converged.
HIGH_LOSS_FRACTION = 0.25
# Train loss above val loss by more than this (10%) at the end.
TRAIN_ABOVE_VAL = 0.10
# Dropout at or above this is "strong"; with it, both losses above POOR_LOSS_FRACTION of
# ln(num_classes) at the end is "both poor": the network removed less than half the uncertainty.
DROPOUT_HIGH = 0.5
POOR_LOSS_FRACTION = 0.5
# Late in training = the last LATE_FRACTION of the steps. Near uniform = the mean top softmax
# probability has not got UNIFORM_MARGIN of the way from 1/C (uniform) to 1 (certain).
# (A randomly initialised network already shows ~0.2 on 10 classes.) Nothing is judged "late"
# before LATE_MIN_STEP updates: a network that has barely trained is not expected to be confident.
LATE_FRACTION = 0.25
UNIFORM_MARGIN = 0.2
LATE_MIN_STEP = 50
# Clipping: clipped on more than this fraction of the sampled steps (above half, lower the LR
# instead), judged from at least CLIP_MIN_SAMPLES samples.
CLIP_FRACTION = 0.5
CLIP_MIN_SAMPLES = 5
# A global gradient norm above this is exploding: with a mean-reduced cross-entropy the gradient
# w.r.t. the logits is at most sqrt(2) per sample, and healthy networks with normalized inputs
# show norms of 0.1-10.
GRAD_EXPLODE = 1e3
# A weight's gradient RMS below this fraction of the largest gradient RMS in the network
# (biases included: the head's bias always gets an O(0.1) gradient) has vanished. Healthy
# networks stay within ~1e-2 of it.
GRAD_VANISH_RATIO = 1e-4
# Activations: a layer output RMS below ACT_VANISH x (or above ACT_EXPLODE x) the RMS of the
# network input. Healthy layers stay within ~1e-2..1e2 of a normalized input.
ACT_VANISH = 1e-3
ACT_EXPLODE = 1e3
# A ReLU layer with more than this fraction of units that are zero for the whole sampled batch.
DEAD_RELU_FRACTION = 0.5

# Unshuffled batches: the mean share of the most common label in the sampled training batches
# more than half way from the class prior (a shuffled loader's share for large batches) to 1 (one
# class per batch), over at least PURITY_MIN_SAMPLES batches of at least PURITY_MIN_BATCH images
# (tiny batches are pure by chance).
PURITY_MARGIN = 0.5
PURITY_MIN_SAMPLES = 5
PURITY_MIN_BATCH = 8

# Regression: targets not normalized whose root mean square (in the units the loss sees) is above
# this are flagged: a freshly initialised network outputs O(1), so its MSE starts near mean(y^2).
TARGET_RMS_MAX = 10.0
# Regression: "still high" for flat losses = above this fraction of the loss of predicting the
# training mean (1 - R^2 > 0.9). Noisy targets keep much of their variance (diabetes: R^2 ~0.5),
# so the classification threshold (HIGH_LOSS_FRACTION of ln C) would call every such run a bottleneck.
REGRESSION_HIGH_LOSS_FRACTION = 0.9

# A run that ends healthy: its accuracy got more than this share of the way from chance to 1
# (digits: chance 0.10, a converged CNN 0.97-0.99, i.e. 0.97) ...
WELL_ABOVE_CHANCE = 0.5
# ... and its last val loss is within this fraction (15%) of its best (plus TREND_MIN_ABS x ln C). Early stopping (patience 10)
# ends converged digits runs with the val loss 0-12% above its best while the accuracy holds: a
# plateau or a slight val loss rise there is the expected end of training, said as info, not a warning.
VAL_NEAR_BEST = 0.15
# Below chance: the mean val accuracy this many binomial standard errors (at least
# ACC_CHANCE_MIN_MARGIN) under 1/num_classes on a balanced val set (largest class at most
# ACC_CHANCE_MIN_MARGIN above 1/num_classes). A guesser cannot do that: the predictions are
# anti-correlated with the labels, i.e. labels or class order mismatched.
ACC_BELOW_SIGMAS = 3.0
