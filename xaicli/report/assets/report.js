/* xai report: the table of a batch, sorted, filtered and drawn lazily.
   Plain ES2017, no framework, no build step: the page must open from the file system in
   browsers of five years ago. The view (sort, filters, shown maps and metrics) lives in the
   URL's hash, so a link shows the same view. Only the rows in sight are in the DOM, so
   10,000 records stay fast to sort and scroll. */
(function () {
  'use strict';

  var D = JSON.parse(document.getElementById('xai-data').textContent);
  var ROWS = D.rows, MAPS = D.maps, METRICS = D.metrics, GROUPS = D.groups;
  var THUMB = D.thumb || 96;
  var BUFFER = 8;                      // rows drawn above and below the window
  var rowH = THUMB + 9;                // measured after the first rows are drawn
  var $ = function (id) { return document.getElementById(id); };
  document.documentElement.style.setProperty('--row-h', rowH + 'px');

  var state = blankState();
  var view = [];                       // indices into ROWS, filtered and sorted
  var drawn = { first: -1, last: -1 };

  // -- small helpers --------------------------------------------------------------------
  function blankState() {
    return { sort: '', desc: false, q: '', model: '', ranges: [], maps: null, metrics: null };
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'text') node.textContent = v;
        else if (k === 'cls') node.className = v;
        else if (k.slice(0, 2) === 'on') node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? '' : v);
      });
    }
    (children || []).forEach(function (c) {
      if (c !== null && c !== undefined) node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return '\u2013';
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(Number(v.toPrecision(3)));
  }

  function fmtScore(row) {
    if (row.p === null || row.p === undefined) return '\u2013';
    return row.pk === 'area' ? (100 * row.p).toFixed(1) + '%' : row.p.toFixed(2);
  }

  function mapLabel(m) { return m.method + ' \u00b7 ' + m.where + ' \u00b7 ' + m.target; }

  // -- columns --------------------------------------------------------------------------
  var FIXED = [
    { id: 'id', label: 'record', text: true, width: 170, get: function (r) { return r.id; } },
    { id: 'model', label: 'model', text: true, width: 150, get: function (r) { return GROUPS[r.g].name; } },
    { id: 'image', label: 'image', width: THUMB + 14 },
    { id: 'class', label: 'prediction', text: true, width: 120, get: function (r) { return r.cls; } },
    { id: 'score', label: 'conf. / area', width: 86, title: 'confidence (classifier) or predicted area (segmenter)',
      get: function (r) { return r.p; } }
  ];
  var METRIC_W = 78;

  function metricColumn(j, k) {
    return {
      id: MAPS[j].id + '|' + METRICS[k].key, label: METRICS[k].label, map: j, metric: k, width: METRIC_W,
      title: METRICS[k].key + ' of ' + mapLabel(MAPS[j]),
      get: function (r) { var c = r.m[j]; return c && c.v ? c.v[k] : null; }
    };
  }

  function columnById(id) {
    for (var i = 0; i < FIXED.length; i++) if (FIXED[i].id === id && FIXED[i].get) return FIXED[i];
    var bar = id.lastIndexOf('|');
    if (bar < 0) return null;
    var j = mapIndex(id.slice(0, bar)), k = metricIndex(id.slice(bar + 1));
    return j < 0 || k < 0 ? null : metricColumn(j, k);
  }

  function mapIndex(id) { for (var j = 0; j < MAPS.length; j++) if (MAPS[j].id === id) return j; return -1; }
  function metricIndex(key) { for (var k = 0; k < METRICS.length; k++) if (METRICS[k].key === key) return k; return -1; }

  function shownMaps() {
    return MAPS.map(function (m, j) { return j; }).filter(function (j) {
      return state.maps === null || state.maps.indexOf(MAPS[j].id) >= 0;
    });
  }

  function shownMetrics() {
    return METRICS.map(function (m, k) { return k; }).filter(function (k) {
      return state.metrics === null ? METRICS[k].shown : state.metrics.indexOf(METRICS[k].key) >= 0;
    });
  }

  function numericColumns() {
    var out = [columnById('score')];
    MAPS.forEach(function (m, j) { METRICS.forEach(function (x, k) { out.push(metricColumn(j, k)); }); });
    return out;
  }

  // -- state <-> URL hash ---------------------------------------------------------------
  function readHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ''));
    var s = blankState();
    s.sort = p.get('sort') || '';
    s.desc = p.get('desc') === '1';
    s.q = p.get('q') || '';
    s.model = p.get('model') || '';
    s.ranges = p.getAll('range').map(function (text) {
      var a = text.split('~');
      return { min: num(a[0]), max: num(a[1]), col: a.slice(2).join('~') };
    }).filter(function (r) { return columnById(r.col); });
    if (p.has('maps')) s.maps = p.getAll('map');
    if (p.has('metrics')) s.metrics = p.getAll('metric');
    return s;
  }

  function num(text) {
    if (text === null || text === undefined || String(text).trim() === '') return null;
    var v = Number(text);
    return isFinite(v) ? v : null;
  }

  function hashOf(s) {
    var p = new URLSearchParams();
    if (s.sort) p.set('sort', s.sort);
    if (s.sort && s.desc) p.set('desc', '1');
    if (s.q) p.set('q', s.q);
    if (s.model) p.set('model', s.model);
    s.ranges.forEach(function (r) {
      p.append('range', (r.min === null ? '' : r.min) + '~' + (r.max === null ? '' : r.max) + '~' + r.col);
    });
    if (s.maps !== null) { p.set('maps', '1'); s.maps.forEach(function (m) { p.append('map', m); }); }
    if (s.metrics !== null) { p.set('metrics', '1'); s.metrics.forEach(function (m) { p.append('metric', m); }); }
    return p.toString();
  }

  function writeHash() {
    var h = hashOf(state);
    if (location.hash.replace(/^#/, '') === h) return;
    var url = location.href.split('#')[0] + (h ? '#' + h : '');
    try { history.replaceState(null, '', url); } catch (e) { location.replace(url); }
  }

  // -- filter and sort ------------------------------------------------------------------
  var haystack = ROWS.map(function (r) {
    return [r.id, r.src, r.cls, GROUPS[r.g].name].join('\n').toLowerCase();
  });

  function computeView() {
    var q = state.q.trim().toLowerCase();
    var ranges = state.ranges.map(function (r) { return { col: columnById(r.col), min: r.min, max: r.max }; })
      .filter(function (r) { return r.col && (r.min !== null || r.max !== null); });
    var out = [];
    for (var i = 0; i < ROWS.length; i++) {
      var r = ROWS[i];
      if (q && haystack[i].indexOf(q) < 0) continue;
      if (state.model && GROUPS[r.g].name !== state.model) continue;
      var ok = true;
      for (var k = 0; k < ranges.length && ok; k++) {
        var v = ranges[k].col.get(r);
        ok = v !== null && v !== undefined && (ranges[k].min === null || v >= ranges[k].min) &&
          (ranges[k].max === null || v <= ranges[k].max);
      }
      if (ok) out.push(i);
    }
    var col = state.sort ? columnById(state.sort) : null;
    if (col) {
      var sign = state.desc ? -1 : 1;
      var keys = new Array(ROWS.length);
      out.forEach(function (i) {
        var v = col.get(ROWS[i]);
        keys[i] = v === null || v === undefined ? null : (col.text ? String(v).toLowerCase() : v);
      });
      out.sort(function (a, b) {          // missing values last in both directions; ties keep input order
        var x = keys[a], y = keys[b];
        if (x === null || y === null) return x === y ? a - b : (x === null ? 1 : -1);
        return x < y ? -sign : x > y ? sign : a - b;
      });
    }
    view = out;
  }

  // -- drawing --------------------------------------------------------------------------
  function figureLink(ref, alt, caption, noThumb, tag) {
    if (!ref) return el('span', { cls: 'none', text: '\u2014', title: 'no such map in this record' });
    if (ref.e !== undefined) return el('div', { cls: 'err', text: 'cannot draw: ' + ref.e, title: ref.e });
    var full = 'figures/' + encodeURIComponent(ref.n);
    var inner = ref.t
      ? el('img', { src: 'thumbs/' + encodeURIComponent(ref.n), width: THUMB, height: THUMB, alt: alt,
        loading: 'lazy', decoding: 'async' })
      : el('span', { text: noThumb });
    return el('a', { cls: 'thumb', href: full, title: caption, 'data-caption': caption },
      [inner, tag ? el('span', { cls: 'tag', text: tag }) : null]);
  }

  function drawHead() {
    var maps = shownMaps(), metrics = shownMetrics();
    var fixed = FIXED.filter(function (c) { return c.id !== 'model' || GROUPS.length > 1; });
    var cols = $('cols'), head = $('head');
    cols.textContent = ''; head.textContent = '';
    var width = 0;
    var top = el('tr'), sub = el('tr');
    function sortable(c, th) {
      th.className = (th.className + ' sortable' + (state.sort === c.id ? (state.desc ? ' desc' : ' asc') : '')).trim();
      th.setAttribute('data-col', c.id);
      th.addEventListener('click', function () {
        if (state.sort === c.id) state.desc = !state.desc; else { state.sort = c.id; state.desc = false; }
        update(true);
      });
      return th;
    }
    fixed.forEach(function (c) {
      cols.appendChild(el('col', { style: 'width:' + c.width + 'px' }));
      width += c.width;
      var th = el('th', { rowspan: 2, text: c.label, title: c.title });
      top.appendChild(c.get ? sortable(c, th) : th);
    });
    maps.forEach(function (j) {
      var m = MAPS[j];
      cols.appendChild(el('col', { style: 'width:' + (THUMB + 10) + 'px' }));
      width += THUMB + 10;
      metrics.forEach(function () { cols.appendChild(el('col', { style: 'width:' + METRIC_W + 'px' })); });
      width += METRIC_W * metrics.length;
      top.appendChild(el('th', { cls: 'group', colspan: 1 + metrics.length, title: m.key },
        [el('div', { text: m.method }), el('div', { cls: 'lab', text: m.where + ' \u00b7 ' + m.target })]));
      sub.appendChild(el('th', { text: 'map' }));
      metrics.forEach(function (k) {
        var c = metricColumn(j, k);
        sub.appendChild(sortable(c, el('th', { text: c.label, title: c.title })));
      });
    });
    head.appendChild(top);
    head.appendChild(sub);
    $('table').style.width = width + 'px';
    var h = top.getBoundingClientRect().height;       // the second header row sticks below the first
    Array.prototype.forEach.call(sub.children, function (th) { th.style.top = h + 'px'; });
  }

  function drawRow(i, maps, metrics) {
    var r = ROWS[i];
    var tr = el('tr', { cls: 'row', 'data-id': r.id });
    tr.appendChild(el('td', { title: r.src || r.id }, [el('div', { cls: 'rid', text: r.id }),
      el('div', { cls: 'src', text: r.src || '' })]));
    if (GROUPS.length > 1) tr.appendChild(el('td', { text: GROUPS[r.g].name, title: GROUPS[r.g].name }));
    tr.appendChild(el('td', { cls: 'map' }, [figureLink(r.img, r.id, r.id + ' \u00b7 all maps', 'no image: figure')]));
    tr.appendChild(el('td', { text: r.cls || '\u2013', title: r.cls || '' }));
    tr.appendChild(el('td', { cls: 'num', text: fmtScore(r) }));
    maps.forEach(function (j) {
      var c = r.m[j];
      var own = c && c.lab !== undefined && c.lab !== null ? String(c.lab) : '';
      var caption = r.id + ' \u00b7 ' + MAPS[j].method + ' \u00b7 ' + MAPS[j].where + ' \u00b7 ' +
        (own || MAPS[j].target);
      var tag = MAPS[j].mixed ? own : '';      // a column whose target differs by record names it on each cell
      tr.appendChild(el('td', { cls: 'map' }, [figureLink(c && (c.n !== undefined || c.e !== undefined) ? c : null,
        r.id + ' ' + MAPS[j].method, caption, 'figure', tag)]));
      metrics.forEach(function (k) {
        var v = c && c.v ? c.v[k] : null;
        tr.appendChild(el('td', { cls: 'num', text: c && c.me ? '!' : fmt(v), title: c && c.me ? c.me : null }));
      });
    });
    return tr;
  }

  function spacer(height, span) {
    return el('tr', { cls: 'spacer' }, [el('td', { cls: 'spacer', colspan: span, style: 'height:' + height + 'px' })]);
  }

  function drawRows(force) {
    var body = $('body');
    var top = body.getBoundingClientRect().top + window.pageYOffset;
    var y = window.pageYOffset - top;
    var first = Math.max(0, Math.floor(y / rowH) - BUFFER);
    var last = Math.min(view.length, Math.ceil((y + window.innerHeight) / rowH) + BUFFER);
    if (last < first) last = first;
    if (!force && first === drawn.first && last === drawn.last) return;
    drawn = { first: first, last: last };
    var maps = shownMaps(), metrics = shownMetrics();
    var span = $('cols').children.length || 1;
    var frag = document.createDocumentFragment();
    frag.appendChild(spacer(first * rowH, span));
    for (var n = first; n < last; n++) frag.appendChild(drawRow(view[n], maps, metrics));
    frag.appendChild(spacer((view.length - last) * rowH, span));
    body.textContent = '';
    body.appendChild(frag);
    $('empty').hidden = view.length > 0;
    $('empty').textContent = ROWS.length ? 'No record matches the filters.' : 'This report holds no records.';
    var one = body.querySelector('tr.row');
    if (one) {
      var h = one.getBoundingClientRect().height;
      if (h > 0 && Math.abs(h - rowH) > 0.5) { rowH = h; drawRows(true); }
    }
  }

  function drawCount() {
    $('count').textContent = 'Showing ' + view.length + ' of ' + ROWS.length + ' record' +
      (ROWS.length === 1 ? '' : 's') + ' \u00b7 made by xai ' + D.xai;
  }

  // -- summary and provenance -----------------------------------------------------------
  function drawSummary() {
    var box = $('summary');
    box.textContent = '';
    box.appendChild(el('h2', { text: GROUPS.length > 1 ? 'Models (' + GROUPS.length + ')' : 'Summary' }));
    var metrics = shownMetrics();
    GROUPS.forEach(function (g) {
      var prov = el('dl', { cls: 'prov' });
      function item(k, v) { if (v) { prov.appendChild(el('dt', { text: k })); prov.appendChild(el('dd', { text: v })); } }
      item('model', g.model.spec);
      item('sha256', g.model.sha256);
      item('architecture', g.model.arch);
      item('labels', g.model.labels ? g.model.labels.join(', ') : '');
      item('xai version', g.versions.join(', '));
      g.steps.forEach(function (s) {
        item(s.command, s.runs.map(function (run) {     // options left at null (unset) say nothing
          return JSON.stringify(run.parameters, function (k, v) { return v === null ? undefined : v; }) +
            ' (' + run.records + ' record' + (run.records === 1 ? '' : 's') + ')';
        }).join('; ') + (s.more ? '; ' + s.more + ' more' : ''));
      });
      g.preprocessing.forEach(function (p) { item('preprocessing', JSON.stringify(p)); });
      var table = el('table', { cls: 'stats' });
      var hr = el('tr', null, [el('th', { text: 'map \u00b7 target' }), el('th', { text: 'n' })]);
      metrics.forEach(function (k) { hr.appendChild(el('th', { text: METRICS[k].label, title: 'mean \u00b1 std' })); });
      table.appendChild(hr);
      g.summary.forEach(function (s) {
        var tr = el('tr', null, [el('td', { text: s.map + ' \u00b7 ' + (s.target === null ? '' : s.target) }),
          el('td', { text: String(s.n) })]);
        metrics.forEach(function (k) {
          var ms = s.v[k];
          tr.appendChild(el('td', { text: ms[0] === null ? '\u2013' : fmt(ms[0]) + (ms[1] === null ? '' : ' \u00b1 ' + fmt(ms[1])) }));
        });
        table.appendChild(tr);
      });
      var title = g.name + ' \u2014 ' + g.records + ' record' + (g.records === 1 ? '' : 's');
      box.appendChild(el('details', { open: true, 'data-group': g.name }, [el('summary', { text: title }), prov,
        g.summary.length ? table : el('p', { cls: 'none', text: 'no maps' })]));
    });
  }

  // -- controls -------------------------------------------------------------------------
  var typing = null;

  function drawControls() {
    var box = $('controls');
    box.textContent = '';
    var search = el('input', { type: 'search', id: 'q', value: state.q, placeholder: 'id, class, source, model',
      oninput: function () {
        clearTimeout(typing);
        typing = setTimeout(function () { state.q = search.value; update(false); }, 120);
      } });
    box.appendChild(el('label', null, ['Filter ', search]));
    if (GROUPS.length > 1) {
      var sel = el('select', { id: 'model', onchange: function () { state.model = sel.value; update(false); } },
        [el('option', { value: '', text: 'all models' })].concat(GROUPS.map(function (g) {
          return el('option', { value: g.name, text: g.name, selected: state.model === g.name });
        })));
      box.appendChild(el('label', null, ['Model ', sel]));
    }
    box.appendChild(chooser('maps', 'Maps', MAPS.map(function (m) { return { id: m.id, label: mapLabel(m) }; }),
      shownMaps().map(function (j) { return MAPS[j].id; })));
    box.appendChild(chooser('metrics', 'Metrics', METRICS.map(function (m) { return { id: m.key, label: m.label }; }),
      shownMetrics().map(function (k) { return METRICS[k].key; })));
    box.appendChild(rangeEditor());
    box.appendChild(el('button', { type: 'button', id: 'reset', text: 'Reset view', onclick: function () {
      state = blankState(); drawControls(); update(true);
    } }));
  }

  function chooser(name, title, items, shown) {
    var list = el('div', { cls: 'choices' });
    items.forEach(function (it) {
      var box = el('input', { type: 'checkbox', value: it.id, checked: shown.indexOf(it.id) >= 0,
        onchange: function () {
          var picked = Array.prototype.filter.call(list.querySelectorAll('input'), function (b) { return b.checked; })
            .map(function (b) { return b.value; });
          state[name] = picked;
          drawSummary();
          update(true);
        } });
      list.appendChild(el('label', null, [box, ' ' + it.label]));
    });
    return el('details', { id: 'choose-' + name }, [el('summary', { text: title + ' (' + shown.length + ' of ' +
      items.length + ' shown)' }), list]);
  }

  function rangeEditor() {
    var box = el('div', { id: 'ranges' });
    var cols = numericColumns();
    state.ranges.forEach(function (r, n) {
      var sel = el('select', { onchange: function () { r.col = sel.value; update(false); } }, cols.map(function (c) {
        return el('option', { value: c.id, text: c.map === undefined ? c.label : mapLabel(MAPS[c.map]) + ': ' + c.label,
          selected: c.id === r.col });
      }));
      function bound(which) {
        var input = el('input', { type: 'number', step: 'any', placeholder: which, value: r[which] === null ? '' : r[which],
          oninput: function () { r[which] = num(input.value); update(false); } });
        return input;
      }
      box.appendChild(el('div', { cls: 'range' }, [sel, ' from ', bound('min'), ' to ', bound('max'), ' ',
        el('button', { type: 'button', title: 'remove this filter', text: '\u00d7', onclick: function () {
          state.ranges.splice(n, 1); drawControls(); update(false);
        } })]));
    });
    box.appendChild(el('button', { type: 'button', id: 'add-range', text: '+ range filter', onclick: function () {
      var j = shownMaps()[0], k = shownMetrics()[0];
      state.ranges.push({ col: j !== undefined && k !== undefined ? metricColumn(j, k).id : 'score', min: null, max: null });
      drawControls(); update(false);
    } }));
    return box;
  }

  // -- the full figure ------------------------------------------------------------------
  function openViewer(link) {
    $('viewer-img').src = link.getAttribute('href');
    $('viewer-caption').textContent = link.getAttribute('data-caption') || '';
    $('viewer').hidden = false;
  }

  function closeViewer() {
    $('viewer').hidden = true;
    $('viewer-img').removeAttribute('src');
  }

  document.addEventListener('click', function (e) {
    var link = e.target.closest ? e.target.closest('a.thumb') : null;
    if (link && !e.ctrlKey && !e.metaKey && !e.shiftKey && e.button === 0) { e.preventDefault(); openViewer(link); return; }
    if (!$('viewer').hidden && (e.target === $('viewer') || e.target === $('viewer-close'))) closeViewer();
  });
  document.addEventListener('keydown', function (e) { if (e.key === 'Escape' && !$('viewer').hidden) closeViewer(); });

  // -- wiring ---------------------------------------------------------------------------
  function update(headToo) {
    computeView();
    if (headToo) drawHead();
    drawRows(true);
    drawCount();
    writeHash();
  }

  var ticking = false;
  function onScroll() {
    if (ticking) return;
    ticking = true;
    window.requestAnimationFrame(function () { ticking = false; drawRows(false); });
  }
  window.addEventListener('scroll', onScroll, { passive: true });
  window.addEventListener('resize', onScroll);
  window.addEventListener('hashchange', function () {
    if (location.hash.replace(/^#/, '') === hashOf(state)) return;
    state = readHash();
    drawControls(); drawSummary(); update(true);
  });

  state = readHash();
  drawSummary();
  drawControls();
  update(true);
  document.documentElement.setAttribute('data-ready', '1');
  if (window.performance && performance.mark) {     // for bench/bench_report.py: table built, then painted
    performance.mark('xai-table');
    window.requestAnimationFrame(function () { setTimeout(function () { performance.mark('xai-painted'); }, 0); });
  }
}());
