"""Pictures: fonts (with the Japanese font choice), label colours, scatter panels, the
clustering comparison grid, the training curves, and saving a figure in the format its
file name asks for.

The drawing half of plot_features.py, cluster_features.py, evaluate_features.py and the
training scripts; the numbers they draw come from `projection`, `clustering` and
`training`. matplotlib is imported inside the functions, so that importing this module
(and the scripts that never draw) stays fast.
"""

import importlib.util
import logging
import os

import numpy as np

from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)

# Label shown for the empty label that bare-text input lines get.
NO_LABEL = '(no label)'


def use_japanese_font():
    """Makes matplotlib draw Japanese text as glyphs, not boxes.

    Uses IPAexGothic from the `matplotlib-fontja` package (requirements.txt), else a CJK
    font installed on the system; DejaVu Sans stays as the fallback for other glyphs.
    Returns the family name chosen, or None (with a warning) when there is none.
    """
    import matplotlib
    from matplotlib import font_manager
    family = _register_fontja(font_manager) or _system_cjk_family(font_manager)
    if family is None:
        logger.warning('no Japanese font found (pip install matplotlib-fontja): Japanese '
                       'labels will be drawn as boxes')
        return None
    matplotlib.rcParams['font.family'] = [family, 'DejaVu Sans']
    return family


def _register_fontja(font_manager):
    """Adds matplotlib-fontja's IPAexGothic to matplotlib; its family name, or None."""
    # Located, not imported: importing the package would also overwrite the rcParams
    # font settings as a side effect.
    try:
        spec = importlib.util.find_spec('matplotlib_fontja')
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], 'fonts', 'ipaexg.ttf')
    if not os.path.exists(path):
        return None
    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


def _system_cjk_family(font_manager):
    """The first installed font family known to cover Japanese, or None."""
    wanted = ('IPAexGothic', 'IPAGothic', 'Noto Sans CJK JP', 'Noto Sans JP',
              'TakaoGothic', 'VL Gothic', 'Source Han Sans JP', 'Hiragino Sans', 'Yu Gothic',
              'MS Gothic')
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in wanted if name in installed), None)


def label_colors(count):
    """(count, 4) RGBA rows of distinct colours: tab10 up to 10 classes, tab20 up to 20,
    then tab20 + tab20b + tab20c (60), then evenly spaced hues."""
    from matplotlib import colormaps
    if count <= 10:
        return colormaps['tab10'](np.arange(count))
    # tab20 comes in dark/light pairs of one hue: the dark ten first keeps the largest
    # classes apart.
    pairs = np.r_[np.arange(0, 20, 2), np.arange(1, 20, 2)]
    if count <= 20:
        return colormaps['tab20'](pairs[:count])
    if count <= 60:
        pooled = np.concatenate([colormaps[name](np.arange(20))
                                 for name in ('tab20b', 'tab20c')])
        return np.concatenate([colormaps['tab20'](pairs), pooled])[:count]
    return colormaps['hsv'](np.linspace(0, 1, count, endpoint=False))


def label_palette(labels):
    """The colour of each label as `scatter` draws it.

    Returns (names, colors): the display names of the distinct labels, largest class
    first (ties in sorted order), and their (K, 4) RGBA colours. The empty label is shown
    as '(no label)'.
    """
    names = [display_name(label) for label in labels]
    classes, counts = np.unique(names, return_counts=True)
    ranking = np.argsort(-counts, kind='stable')
    return [str(classes[k]) for k in ranking], label_colors(len(classes))


def display_name(label):
    return NO_LABEL if label == '' else str(label)


# Longest label drawn in full; a longer one is cut with an ellipsis. Two 100,000-character
# labels made a legend 1,500,101 pixels wide (5.46 GB to draw).
MAX_LABEL_CHARS = 40
# Longest title or panel note drawn in full (titles name files, which may be long).
MAX_TITLE_CHARS = 200
# Most labels listed in a legend; the rest are summed up in one last entry. 3,000 labels
# made a legend 39,116 pixels tall.
MAX_LEGEND_LABELS = 40


def literal(text, limit=MAX_LABEL_CHARS):
    """`text` as matplotlib must be given it to draw it as it is, at most `limit`
    characters (a longer one ends with '…').

    Every label, title and name drawn in a picture goes through here: matplotlib reads
    text between two '$' as math and fails on what it cannot parse (a label '$\\foo$'
    raised ParseFatalException at the end of a run); an escaped '\\$' is drawn as '$'.
    """
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 1] + '\u2026'
    return text.replace('$', '\\$')


def scatter(ax, xy, labels, title):
    """Draws (N, 2) points `xy` on `ax`, coloured by their N `labels`, with a legend
    titled 'label' of the label names (outside the axes, on the right, beyond 10 labels)
    and `title` (which may hold several lines).

    Classes are listed by size, largest first; points are drawn in a seeded random order
    so that no class hides the others.
    """
    names, colors = label_palette(labels)
    color_of = dict(zip(names, colors))
    point_colors = np.array([color_of[display_name(label)] for label in labels])
    draw_points(ax, xy, point_colors)
    _legend(ax, names, colors)
    ax.set_title(literal(title, MAX_TITLE_CHARS))


def fixed(value, digits=2):
    """`value` with `digits` decimals, never '-0.00' (a score of -0.001 is drawn 0.00);
    'n/a' for NaN (e.g. precision@1 when every label is a singleton)."""
    if value != value:
        return 'n/a'
    text = '%.*f' % (digits, value)
    return text[1:] if text.startswith('-') and float(text) == 0 else text


def scores_line(precision_at_1, map_at_r):
    """'precision@1 0.816   MAP@R 0.297', the retrieval figures a picture is titled with."""
    return 'precision@1 %s   MAP@R %s' % (fixed(precision_at_1, 3), fixed(map_at_r, 3))


def draw_points(ax, xy, colors, layers=None):
    """(N, 2) points with (N, 4) RGBA colours, in a seeded random order, no ticks.
    layers: None, or (N,) ints: points of a lower layer are drawn first, under the
    others (in a random order within a layer)."""
    xy = np.asarray(xy)
    order = np.random.default_rng(0).permutation(len(xy))
    if layers is not None:
        order = order[np.argsort(np.asarray(layers)[order], kind='stable')]
    ax.scatter(xy[order, 0], xy[order, 1], c=np.asarray(colors)[order],
               s=marker_size(len(xy)), linewidths=0, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def marker_size(count):
    """Marker area in points²: large for a few dozen points, small for thousands."""
    return float(np.clip(5000.0 / max(count, 1), 3.0, 30.0))


def legend_handles(colors):
    """Coloured-dot legend handles, one per RGBA row."""
    from matplotlib.lines import Line2D
    return [Line2D([], [], linestyle='', marker='o', markersize=6, color=color)
            for color in colors]


def legend_entries(names, colors):
    """(handles, texts) of a legend of the K `names` with their (K, 4) RGBA `colors`,
    largest class first: at most MAX_LEGEND_LABELS of them, each drawn literally and cut
    to MAX_LABEL_CHARS, then one entry that counts the labels left out."""
    shown = min(len(names), MAX_LEGEND_LABELS)
    handles = legend_handles(colors[:shown])
    texts = [literal(name) for name in names[:shown]]
    if len(names) > shown:
        handles.append(legend_handles([NOISE_COLOR])[0])
        texts.append('\u2026 and %d more labels' % (len(names) - shown))
    return handles, texts


# The title of every legend of label colours.
LABEL_LEGEND_TITLE = 'label'


def _legend(ax, names, colors):
    """A legend of coloured dots titled 'label', one per name, inside the axes up to 10
    names."""
    handles, texts = legend_entries(names, colors)
    if len(texts) <= 10:
        ax.legend(handles, texts, loc='best', fontsize='small', framealpha=0.8,
                  title=LABEL_LEGEND_TITLE, title_fontsize='small')
    else:
        columns = 1 if len(texts) <= 30 else 2
        ax.legend(handles, texts, loc='upper left', bbox_to_anchor=(1.01, 1.0),
                  fontsize='small', ncol=columns, borderaxespad=0.0, frameon=False,
                  title=LABEL_LEGEND_TITLE, title_fontsize='small')


FIGURE_FORMATS = ('png', 'pdf', 'svg')


def figure_format(path):
    """The picture format named by `path`'s extension: png, pdf or svg; else UsageError."""
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in FIGURE_FORMATS:
        raise UsageError('%s: cannot tell the picture format from the extension %r; use '
                         'one of %s' % (path, '.' + extension if extension else '',
                                        ', '.join('.' + f for f in FIGURE_FORMATS)))
    return extension


# No side of a picture may exceed this many pixels: image viewers and browsers refuse or
# choke on larger ones (a 126,011-pixel-wide PNG took 139 s to write and opened nowhere).
MAX_PIXELS = 20000


def check_picture_size(width_inches, height_inches, dpi, path):
    """UsageError when a picture of this size would be too large to open."""
    width, height = width_inches * dpi, height_inches * dpi
    if max(width, height) > MAX_PIXELS:
        raise UsageError('%s: a picture of %d x %d pixels is too large to open (at most '
                         '%d a side): ask for fewer panels or points' % (path, width, height,
                                                                         MAX_PIXELS))


def save_figure(figure, path, dpi=150):
    """Writes `figure` to `path` in the format of its extension, complete or not at all;
    UsageError, before drawing, when it would be too large to open.

    The size checked is the final one: `bbox_inches='tight'` grows the picture to hold
    everything outside the axes (a legend on the right, long tick labels), so the layout
    is computed first without rendering, and its bounding box is what is measured."""
    check_picture_size(*figure.get_size_inches(), dpi, path)
    figure.draw_without_rendering()
    box = figure.get_tightbbox()
    check_picture_size(box.width, box.height, dpi, path)
    with atomic_write(path, 'wb') as stream:
        figure.savefig(stream, format=figure_format(path), dpi=dpi, bbox_inches='tight')


NOISE_COLOR = (0.75, 0.75, 0.75, 1.0)

# Cluster colours, largest cluster first: a palette of their own, so that a cluster id is
# never read as a label (label_colors starts with tab10's blue and orange): Dark2 then
# three of Set2 (colorbrewer), without their greys (grey is noise) and Set2's pink (too
# close to tab10's), ordered so that the first two are neither blue nor orange.
CLUSTER_PALETTE = ('#1b9e77', '#e7298a', '#7570b3', '#e6ab02', '#66a61e', '#d95f02',
                   '#a6761d', '#66c2a5', '#8da0cb', '#ffd92f')
# The one colour of every cluster past the palette's (MeanShift and AffinityPropagation
# may find dozens): the legend says so, rather than repeating colours.
SMALL_CLUSTERS_COLOR = (0.25, 0.25, 0.25, 1.0)
# Panel titles in points: three lines at this size stay legible with 4.6-inch panels.
PANEL_TITLE_SIZE = 13


def cluster_colors(predicted):
    """(N, 4) RGBA colours of N points by their cluster ids `predicted`, numbered by size
    from 0 (clustering.by_size): cluster k takes CLUSTER_PALETTE[k], clusters past the
    palette SMALL_CLUSTERS_COLOR, noise (-1) light grey."""
    from matplotlib.colors import to_rgba
    table = np.array([to_rgba(c) for c in CLUSTER_PALETTE] + [SMALL_CLUSTERS_COLOR,
                                                             NOISE_COLOR])
    predicted = np.asarray(predicted)
    rows = np.minimum(predicted, len(CLUSTER_PALETTE))
    rows[predicted == -1] = len(CLUSTER_PALETTE) + 1
    return table[rows]


def count(number, noun):
    """'1 cluster', '2 clusters', '0 clusters'."""
    return '%d %s%s' % (number, noun, '' if number == 1 else 's')


def sizes_line(sizes, noise):
    """What a clustering found, for a panel title: '2 clusters: 1065 + 1 points', with
    the noise after it. sizes: the clusters' sizes, largest first; noise: points in no
    cluster (DBSCAN, OPTICS)."""
    if not sizes:
        text = 'no cluster'
    elif len(sizes) <= 4:
        text = '%s: %s' % (count(len(sizes), 'cluster'), count(sum(sizes), 'point')
                           if len(sizes) == 1 else ' + '.join(map(str, sizes)) + ' points')
    else:
        text = '%s: %d, %d, %d \u2026 %d points' % (count(len(sizes), 'cluster'), sizes[0],
                                                  sizes[1], sizes[2], sizes[-1])
    if noise:
        text += ', %d noise' % noise
    return text


def panel_title(name, outcome, timeout):
    """Three lines: the algorithm, the sizes of its clusters (and noise), then its time,
    NMI and ARI; or two, the algorithm and what went wrong."""
    if outcome.status == 'timeout':
        return '%s\ntimeout after %.0f s' % (name, timeout)
    if outcome.status.startswith('failed'):
        return '%s\nfailed' % name
    _, seconds, result = outcome.value
    note = ', not converged' if 'converge' in outcome.status else ''
    return ('%s%s\n%s\n%.1f s   NMI %s   ARI %s'
            % (name, note, sizes_line(result['sizes'], result['noise']), seconds,
               fixed(result['nmi']), fixed(result['ari'])))


def cluster_legend_entries(results):
    """(handles, texts) of the legend of cluster colours, as many as the most clusters a
    panel shows, then the colour of smaller ones and noise where a panel has them.
    results: (name, Outcome) pairs, as draw_grid takes them."""
    found = [outcome.value[2] for _, outcome in results if outcome.value is not None]
    most = max([len(s['sizes']) for s in found], default=0)
    shown = min(most, len(CLUSTER_PALETTE))
    colors = list(CLUSTER_PALETTE[:shown])
    texts = ['cluster %d%s' % (k + 1, ' (largest)' if k == 0 else '') for k in range(shown)]
    if most > shown:
        colors.append(SMALL_CLUSTERS_COLOR)
        texts.append('clusters %d and smaller' % (shown + 1))
    if any(s['noise'] for s in found):
        colors.append(NOISE_COLOR)
        texts.append('noise: in no cluster (DBSCAN, OPTICS:\ntoo few neighbours close by)')
    return legend_handles(colors), texts


# Legend rows a column of the clustering grid's legend at most: about the height of a
# 5-inch panel at PANEL_TITLE_SIZE - 1 points.
LEGEND_ROWS = 18

# The two sections of the clustering grid's legend.
LEGEND_HEADINGS = ('ground truth panel: label', 'other panels: cluster, numbered by size')


def draw_grid(figure, xy, labels, results, columns, timeout, title):
    """The comparison figure: the ground truth, then one panel per algorithm, on the
    (N, 2) coordinates `xy`, `columns` panels a row.

    results: list of (name, Outcome) from clustering.run_guarded(clustering.evaluate,
    ...), cluster ids numbered by size. The legend takes the free slots at the end of the
    last row, or sits right of the last column: a section of the label colours of the
    ground truth, then one of the cluster colours of the other panels. Every panel has
    the same size and the same gaps to its neighbours.
    """
    panels = len(results) + 1
    rows = -(-panels // columns)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    scatter(axes[0], xy, labels, '')
    axes[0].set_title('ground truth\n%s\ncolour = label' % count(len(set(labels)), 'label'),
                      fontsize=PANEL_TITLE_SIZE)
    axes[0].get_legend().remove()
    names, colors = label_palette(labels)
    label_entries = legend_entries(names, colors)
    cluster_entries = cluster_legend_entries(results)
    for ax, (name, outcome) in zip(axes[1:], results):
        _draw_panel(ax, xy, name, outcome, timeout)
    handles, texts = _headed(LEGEND_HEADINGS[0], *label_entries)
    headings = [0]
    if cluster_entries[1]:
        more = _headed(LEGEND_HEADINGS[1], *cluster_entries)
        headings.append(len(texts) + 1)
        handles += [_blank()] + more[0]
        texts += [''] + more[1]
    style = {'frameon': False, 'ncol': -(-len(texts) // LEGEND_ROWS),
             'fontsize': PANEL_TITLE_SIZE - 1}
    if panels < len(axes):
        # One slot spanning the free ones, to the end of the last row, its legend hung
        # from its top left corner: a legend larger than the slot grows right and down,
        # into the figure's margins. Centred in a slot it grew both ways, and the
        # constrained layout widened that whole column's margins: a gap between panels.
        for ax in axes[panels:]:
            ax.remove()
        slot = figure.add_subplot(axes[0].get_subplotspec().get_gridspec()[
            rows - 1, panels % columns:])
        slot.axis('off')
        legend = slot.legend(handles, texts, loc='upper left', bbox_to_anchor=(0.0, 1.0),
                             borderaxespad=0.0, **style)
    else:
        legend = figure.legend(handles, texts, loc='center left', bbox_to_anchor=(1.0, 0.5),
                               **style)
    for row in headings:
        legend.get_texts()[row].set_fontweight('bold')
    figure.suptitle(literal(title, MAX_TITLE_CHARS), fontsize=PANEL_TITLE_SIZE + 1)


def _blank():
    from matplotlib.lines import Line2D
    return Line2D([], [], linestyle='', marker='')


def _headed(heading, handles, texts):
    """A legend section: `heading` (without a mark), then the entries."""
    return [_blank()] + list(handles), [heading] + list(texts)


def _draw_panel(ax, xy, name, outcome, timeout):
    if outcome.value is None:
        draw_points(ax, xy, np.tile(NOISE_COLOR, (len(xy), 1)))
        word = 'timeout' if outcome.status == 'timeout' else 'failed'
        ax.text(0.5, 0.5, word, transform=ax.transAxes, ha='center', va='center',
                color='tab:red', fontsize='x-large', fontweight='bold')
        if word == 'failed':
            reason = outcome.status[len('failed: '):]
            ax.text(0.5, 0.38, literal(reason, 60), transform=ax.transAxes, ha='center',
                    va='center', color='tab:red', fontsize='small', wrap=True)
    else:
        # Ids are size ranks: noise first, then from the largest cluster to the smallest,
        # so that a small cluster (a single point) is never hidden under a large one.
        draw_points(ax, xy, cluster_colors(outcome.value[0]), layers=outcome.value[0])
    ax.set_title(literal(panel_title(name, outcome, timeout), MAX_TITLE_CHARS),
                 fontsize=PANEL_TITLE_SIZE)


# Two score curves closer than this at every epoch get one legend entry: on the 0-1 axis,
# about 370 pixels tall, they are within 2 pixels, one hidden under the other.
COINCIDE = 0.005


def curve_labels(records, split, score_names):
    """The legend texts of one split's ('T' or 'D') two score curves, e.g. ('eval
    accuracy', 'eval UAR'); when the two coincide, the first says so and the second is
    None (the second curve is not drawn: it is the first's line)."""
    word = {'T': 'train', 'D': 'eval'}[split]
    first, second = ['%s %s' % (word, name) for name in score_names]
    gaps = np.array([abs(r[split + '/acc1'] - r[split + '/acc2']) for r in records])
    if np.all(gaps < COINCIDE):  # a NaN score (no query had a match) never coincides
        return ('%s = %s (within %s: one line)' % (first, score_names[1], COINCIDE), None)
    return first, second


def loss_range(records):
    """'train 4.04 -> 3.87, eval 3.98 -> 3.98': the losses of the first and last epochs."""
    return ', '.join('%s %s \u2192 %s' % (word, _loss_text(records[0][key]),
                                          _loss_text(records[-1][key]))
                     for word, key in (('train', 'T/loss'), ('eval', 'D/loss')))


def _loss_text(value):
    return '%.4g' % value


def plot_curves(records, path, score_names=('acc1', 'acc2'), title=''):
    """The training curves of a run, one point per epoch: the train and eval loss, on an
    axis from zero with the first and last values written above it, and the train and
    eval scores (acc1 and acc2 of the log, named in words by `score_names`, e.g.
    ('precision@1', 'MAP@R') or ('accuracy', 'UAR')) on a 0-1 axis. `title` names the run
    and its loss. records: the log's per-epoch dicts."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    epochs = [r['epoch'] for r in records]
    figure = Figure(figsize=(11, 4.6), layout='constrained')
    loss_axis, score_axis = figure.subplots(1, 2)
    # One colour per split in both panels; in the scores, acc1 solid and acc2 dashed.
    color = {'T': 'tab:blue', 'D': 'tab:orange'}
    loss_axis.plot(epochs, [r['T/loss'] for r in records], 'o-', color=color['T'],
                   label='train loss')
    loss_axis.plot(epochs, [r['D/loss'] for r in records], 's-', color=color['D'],
                   label='eval loss')
    losses = [r[key] for r in records for key in ('T/loss', 'D/loss')
              if np.isfinite(r[key])]  # a NaN loss is left out of the range
    if losses and min(losses) >= 0:
        # From zero, so that a 3% drop does not look like a crash.
        loss_axis.set_ylim(bottom=0, top=max(losses) * 1.1 or 1.0)
    loss_axis.set_title('loss: ' + loss_range(records), fontsize='medium')
    loss_axis.set_xlabel('epoch')
    loss_axis.set_ylabel('loss')
    loss_axis.legend(loc='best')
    for split, marker in (('T', 'o'), ('D', 's')):
        first, second = curve_labels(records, split, score_names)
        score_axis.plot(epochs, [r[split + '/acc1'] for r in records], marker + '-',
                        color=color[split], label=first)
        if second is not None:  # else the legend says acc2 is the same line
            score_axis.plot(epochs, [r[split + '/acc2'] for r in records], marker + '--',
                            color=color[split], mfc='white', label=second)
    score_axis.set_title(' and '.join(score_names), fontsize='medium')
    score_axis.set_xlabel('epoch')
    score_axis.set_ylabel('score')
    score_axis.set_ylim(0, 1)
    score_axis.legend(loc='best')
    for axis in (loss_axis, score_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(literal(title, MAX_TITLE_CHARS))
    save_figure(figure, path, dpi=100)


def draw_confusion(matrix, rates, names, path, title):
    """A confusion matrix picture: (K, K) counts `matrix` and row rates `rates` (rows:
    true, columns: predicted), the rates as colours and each cell annotated with its
    count (up to 30 classes). Japanese label names are drawn with their glyphs."""
    from matplotlib.figure import Figure
    use_japanese_font()
    side = min(4.0 + 0.45 * len(names), 40.0)
    figure = Figure(figsize=(side + 1.5, side), layout='constrained')
    ax = figure.subplots()
    image = ax.imshow(rates, cmap='Blues', vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label='rate of the true class')
    shown = [literal(name) for name in names]
    # Column names across while the longest fits its column, else upwards: the image
    # is about an inch narrower than `side`, and a character at most one em (10 points,
    # a Japanese one) of the ticks.
    column_points = 72.0 * (side - 1.0) / len(names)
    across = max(len(name) for name in shown) * 10.0 <= column_points
    ax.set_xticks(range(len(names)), shown, rotation=0 if across else 90)
    ax.set_yticks(range(len(names)), shown)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha='center', va='center', fontsize='small',
                    color='white' if rates[i, j] > 0.5 else 'black')
    ax.set_title(literal(title, MAX_TITLE_CHARS))
    save_figure(figure, path, dpi=100)
