// active-balancer-cells: one bar per cell of a Smart Active Balancer.
//
// Shipped with the active_balancer integration, which serves this file and
// adds it to the frontend: no dashboard resource to add by hand. Plain
// JavaScript, no framework, no build step.
//
// The card finds its entities through the entity registry (device id,
// platform and translation key) and the cell numbers through the entities'
// unique ids, so renamed entities keep working.

const DOMAIN = "active_balancer";
const CARD = "active-balancer-cells";
const EDITOR = `${CARD}-editor`;

// The chemistries' plausible cell voltages together (the integration's
// ALL_CHEMISTRIES_RANGE); used while the chemistry is not known.
const FALLBACK_RANGE = [1.8, 4.15];

const ALARMS = [
  "cell_overvoltage",
  "cell_undervoltage",
  "discharge_overtemperature",
  "discharge_undertemperature",
];

const STRINGS = {
  en: {
    average: "Average",
    balancing: "Balancing",
    cell: "Cell {cell}",
    cells: "Cells",
    delta: "Difference",
    device: "Balancer",
    highest: "highest",
    idle: "Idle",
    lowest: "lowest",
    noDevice: "Choose a balancer in the card editor.",
    notFound: "This balancer is not set up (any more).",
    pack: "Pack",
    title: "Title",
    unavailable: "Balancer unavailable: no current readings.",
    cell_overvoltage: "Cell over-voltage",
    cell_undervoltage: "Cell under-voltage",
    discharge_overtemperature: "Discharge over-temperature",
    discharge_undertemperature: "Discharge under-temperature",
  },
  de: {
    average: "Mittelwert",
    balancing: "Balancing",
    cell: "Zelle {cell}",
    cells: "Zellen",
    delta: "Differenz",
    device: "Balancer",
    highest: "höchste",
    idle: "Ruht",
    lowest: "niedrigste",
    noDevice: "Balancer im Karteneditor auswählen.",
    notFound: "Dieser Balancer ist nicht (mehr) eingerichtet.",
    pack: "Akkupack",
    title: "Titel",
    unavailable: "Balancer nicht erreichbar: keine aktuellen Werte.",
    cell_overvoltage: "Zell-Überspannung",
    cell_undervoltage: "Zell-Unterspannung",
    discharge_overtemperature: "Übertemperatur beim Entladen",
    discharge_undertemperature: "Untertemperatur beim Entladen",
  },
  "zh-Hans": {
    average: "平均",
    balancing: "均衡中",
    cell: "电芯 {cell}",
    cells: "电芯数",
    delta: "压差",
    device: "均衡器",
    highest: "最高",
    idle: "空闲",
    lowest: "最低",
    noDevice: "请在卡片编辑器中选择均衡器。",
    notFound: "此均衡器未设置（或已删除）。",
    pack: "电池组",
    title: "标题",
    unavailable: "均衡器不可用：没有当前读数。",
    cell_overvoltage: "电芯过压",
    cell_undervoltage: "电芯欠压",
    discharge_overtemperature: "放电过温",
    discharge_undertemperature: "放电低温",
  },
};

function strings(hass) {
  const language = hass?.locale?.language ?? hass?.language ?? "en";
  if (STRINGS[language]) return STRINGS[language];
  if (language.startsWith("zh")) return STRINGS["zh-Hans"];
  return STRINGS[language.split("-")[0]] ?? STRINGS.en;
}

function escape(text) {
  return String(text).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

function number(state) {
  if (!state || state.state === "unavailable" || state.state === "unknown") return null;
  const value = Number(state.state);
  return Number.isFinite(value) ? value : null;
}

// Volts per unit a voltage may be shown in (the user can pick mV; the
// cell voltage difference is shown in mV by default).
const VOLTS = { V: 1, mV: 0.001, µV: 0.000001, kV: 1000 };

function voltsPer(state) {
  return VOLTS[state?.attributes?.unit_of_measurement] ?? 1;
}

/** A voltage state in volts, whatever unit it is shown in. */
function volts(state) {
  const value = number(state);
  return value === null ? null : value * voltsPer(state);
}

/** The balancer devices: devices with an entity of this integration. */
function balancerDevices(hass) {
  const ids = new Set();
  for (const entry of Object.values(hass.entities ?? {})) {
    if (entry.platform === DOMAIN && entry.device_id) ids.add(entry.device_id);
  }
  return [...ids].filter((id) => hass.devices?.[id]);
}

const STYLE = `
  :host { display: block; }
  ha-card { padding: 12px 16px 16px; container-type: inline-size; }
  .header { display: flex; justify-content: space-between; align-items: baseline;
    gap: 8px; flex-wrap: wrap; }
  .title { font-size: var(--ha-card-header-font-size, 20px); color: var(--ha-card-header-color,
    var(--primary-text-color)); }
  .state { font-size: 14px; color: var(--secondary-text-color); }
  .state.on { color: var(--warning-color, #ff9800); font-weight: 500; }
  .bars { display: grid; grid-template-columns: repeat(var(--cells), minmax(0, 1fr));
    gap: 3px; height: 140px; margin: 12px 0 4px; align-items: end; }
  .bar { position: relative; height: 100%; padding: 0; border: 0; cursor: pointer;
    background: var(--secondary-background-color, #e5e5e5); border-radius: 3px;
    display: flex; align-items: flex-end; outline-offset: 1px; }
  .bar:focus-visible { outline: 2px solid var(--primary-color); }
  .fill { width: 100%; background: var(--success-color, #43a047); border-radius: 3px;
    transition: height 0.4s ease; }
  .bar.lowest .fill { background: var(--info-color, #039be5); }
  .bar.highest .fill { background: var(--error-color, #db4437); }
  .bar.balancing { box-shadow: inset 0 0 0 2px var(--warning-color, #ff9800); }
  .bar.balancing::before { content: ""; position: absolute; top: 4px; left: 50%;
    width: 6px; height: 6px; margin-left: -3px; border-radius: 50%;
    background: var(--warning-color, #ff9800); }
  .numbers { display: grid; grid-template-columns: repeat(var(--cells), minmax(0, 1fr));
    gap: 3px; font-size: 11px; text-align: center; color: var(--secondary-text-color); }
  .numbers .lowest { color: var(--info-color, #039be5); font-weight: 700; }
  .numbers .highest { color: var(--error-color, #db4437); font-weight: 700; }
  .figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(72px, 1fr));
    gap: 8px; margin-top: 12px; }
  .figure .label { font-size: 12px; color: var(--secondary-text-color); }
  .figure .value { font-size: 16px; color: var(--primary-text-color); }
  .alarms { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 12px; }
  .alarm { padding: 2px 8px; border-radius: 12px; font-size: 13px;
    color: var(--text-primary-color, #fff); background: var(--error-color, #db4437); }
  .message { padding: 24px 0 8px; color: var(--secondary-text-color); }
  .message.unavailable { color: var(--error-color, #db4437); }
  @container (max-width: 420px) {
    .bars, .numbers { gap: 2px; }
    .numbers { font-size: 9px; }
    .bars { height: 110px; }
  }
`;

class ActiveBalancerCellsCard extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._config = {};
    this._entities = null; // what the registry says for the device
    this._registry = null; // the hass.entities the list was made from
    this._cells = new Map(); // entity id -> cell number (from the unique ids)
    this._fetching = null;
    this._shown = null;
  }

  static getConfigElement() {
    return document.createElement(EDITOR);
  }

  static getStubConfig(hass) {
    const [device] = balancerDevices(hass);
    return device ? { device_id: device } : {};
  }

  setConfig(config) {
    if (!config || typeof config !== "object") throw new Error("Invalid configuration");
    if (config.device_id !== undefined && typeof config.device_id !== "string") {
      throw new Error("device_id must be a device id");
    }
    this._config = { ...config };
    this._entities = null;
    this._registry = null;
    this._shown = null;
    this._update();
  }

  set hass(hass) {
    this._hass = hass;
    this._update();
  }

  get hass() {
    return this._hass;
  }

  getCardSize() {
    return 5;
  }

  getGridOptions() {
    return { columns: 12, min_columns: 6, rows: "auto" };
  }

  /** The device's entities by translation key; cell voltages in a list. */
  _resolve() {
    const hass = this._hass;
    const device = this._config.device_id;
    const found = { cells: [], keys: {} };
    for (const entry of Object.values(hass.entities ?? {})) {
      if (entry.device_id !== device || entry.platform !== DOMAIN) continue;
      const domain = entry.entity_id.split(".")[0];
      if (entry.translation_key === "cell_voltage" && domain === "sensor") {
        found.cells.push(entry.entity_id);
      } else if (entry.translation_key) {
        found.keys[`${domain}.${entry.translation_key}`] = entry.entity_id;
      }
    }
    found.signature = [...found.cells, ...Object.values(found.keys)].sort().join(",");
    return found;
  }

  /** Learn the cell numbers from the unique ids ("<entry>-cell_<n>_voltage"). */
  async _fetchCells(ids) {
    const result = await this._hass.callWS({
      type: "config/entity_registry/get_entries",
      entity_ids: ids,
    });
    const cells = new Map(this._cells);
    for (const id of ids) {
      const match = /-cell_(\d+)_voltage$/.exec(result?.[id]?.unique_id ?? "");
      cells.set(id, match ? Number(match[1]) : null);
    }
    return cells;
  }

  _update() {
    const hass = this._hass;
    if (!hass) return;
    if (!this._config.device_id) {
      this._message(strings(hass).noDevice);
      return;
    }
    if (!hass.devices?.[this._config.device_id]) {
      this._message(strings(hass).notFound);
      return;
    }
    // The frontend replaces hass.entities when the registry changes: only then
    // is the device's entity list looked up again (not on every state change).
    if (!this._entities || this._registry !== hass.entities) {
      const resolved = this._resolve();
      this._registry = hass.entities;
      if (!this._entities || this._entities.signature !== resolved.signature) {
        this._entities = resolved;
        this._shown = null;
      }
    }
    const resolved = this._entities;
    const missing = resolved.cells.filter((id) => !this._cells.has(id));
    if (missing.length && !this._fetching) {
      this._fetching = this._fetchCells(missing)
        .then((cells) => {
          this._cells = cells;
        })
        .catch(() => {
          // Without the registry's answer the cells keep registry order.
          this._cells = new Map(resolved.cells.map((id, index) => [id, index + 1]));
        })
        .finally(() => {
          this._fetching = null;
          this._shown = null;
          this._update();
        });
    }
    if (this._fetching) return;
    const ids = [...this._entities.cells, ...Object.values(this._entities.keys)];
    const states = ids.map((id) => hass.states[id]);
    const shown = [hass.locale?.language, this._config.title, ...states];
    if (this._shown && shown.every((value, index) => value === this._shown[index])) return;
    this._shown = shown;
    this._render();
  }

  _message(text, kind = "") {
    this._shown = null;
    const html = `<style>${STYLE}</style><ha-card>${this._header(null)}
      <div class="message ${kind}">${escape(text)}</div></ha-card>`;
    if (html === this._html) return; // the same message: leave the DOM alone
    this._html = html;
    this.shadowRoot.innerHTML = html;
  }

  _header(balancing) {
    const hass = this._hass;
    const device = hass.devices?.[this._config.device_id];
    const title = this._config.title ?? device?.name_by_user ?? device?.name ?? "";
    let state = "";
    if (balancing !== null) {
      const text = balancing ? strings(hass).balancing : strings(hass).idle;
      state = `<span class="state${balancing ? " on" : ""}">${escape(text)}</span>`;
    }
    return `<div class="header"><span class="title">${escape(title)}</span>${state}</div>`;
  }

  _state(key) {
    const id = this._entities.keys[key];
    return id ? this._hass.states[id] : undefined;
  }

  _range() {
    const { min_voltage: low, max_voltage: high } = this._config;
    if (Number.isFinite(low) && Number.isFinite(high) && high > low) return [low, high];
    // The balance start voltage's limits follow the chemistry set on the device.
    const start = this._state("number.balance_start_voltage");
    const min = Number(start?.attributes?.min) * voltsPer(start);
    const max = Number(start?.attributes?.max) * voltsPer(start);
    return Number.isFinite(min) && Number.isFinite(max) && max > min ? [min, max] : FALLBACK_RANGE;
  }

  _render() {
    const hass = this._hass;
    const text = strings(hass);
    const cells = this._entities.cells
      .map((id) => ({ id, number: this._cells.get(id), volts: volts(hass.states[id]) }))
      .filter((cell) => Number.isInteger(cell.number))
      .sort((a, b) => a.number - b.number);
    const connected = this._state("binary_sensor.connectivity");
    if (
      !cells.length ||
      connected?.state === "off" ||
      cells.every((cell) => hass.states[cell.id]?.state === "unavailable")
    ) {
      this._message(text.unavailable, "unavailable");
      return;
    }
    const known = cells.filter((cell) => cell.volts !== null);
    const values = known.map((cell) => cell.volts);
    const low = Math.min(...values);
    const high = Math.max(...values);
    const lowest = known.find((cell) => cell.volts === low)?.number;
    const highest = known.find((cell) => cell.volts === high)?.number;
    const balancingCells = new Set(
      (this._state("sensor.balancing_cells")?.state ?? "")
        .split(",")
        .map((part) => Number(part.trim()))
        .filter((value) => Number.isInteger(value) && value > 0),
    );
    const balancingState = this._state("binary_sensor.balancing")?.state;
    const balancing = balancingState === "on" ? true : balancingState === "off" ? false : null;
    const [bottom, top] = this._range();

    const bars = cells
      .map((cell) => {
        const classes = ["bar"];
        const notes = [];
        if (cell.number === lowest && known.length > 1) {
          classes.push("lowest");
          notes.push(text.lowest);
        }
        if (cell.number === highest && known.length > 1) {
          classes.push("highest");
          notes.push(text.highest);
        }
        if (balancingCells.has(cell.number)) {
          classes.push("balancing");
          notes.push(text.balancing.toLowerCase());
        }
        const mv = cell.volts === null ? null : Math.round(cell.volts * 1000);
        const share = cell.volts === null ? 0 : (cell.volts - bottom) / (top - bottom);
        const height = Math.min(100, Math.max(0, share * 100)).toFixed(1);
        const name = text.cell.replace("{cell}", cell.number);
        const tip = `${name}: ${mv === null ? "–" : `${mv} mV`}${notes.length ? ` (${notes.join(", ")})` : ""}`;
        return `<button class="${classes.join(" ")}" data-entity="${escape(cell.id)}"
          data-cell="${cell.number}" data-mv="${mv ?? ""}" title="${escape(tip)}"
          aria-label="${escape(tip)}"><div class="fill" style="height:${height}%"></div></button>`;
      })
      .join("");
    const numbers = cells
      .map((cell) => {
        const mark = cell.number === lowest ? "lowest" : cell.number === highest ? "highest" : "";
        return `<span class="${mark}">${cell.number}</span>`;
      })
      .join("");

    const format = (value, digits, unit) => (value === null ? "–" : `${value.toFixed(digits)} ${unit}`);
    const delta = volts(this._state("sensor.delta_cell_voltage"));
    const average = volts(this._state("sensor.average_cell_voltage"));
    const pack = volts(this._state("sensor.pack_voltage"));
    const figures = [
      [text.cells, `${cells.length}`],
      [text.delta, delta === null ? "–" : `${Math.round(delta * 1000)} mV`],
      [text.average, format(average, 3, "V")],
      [text.pack, format(pack, 1, "V")],
    ]
      .map(
        ([label, value]) =>
          `<div class="figure"><div class="label">${escape(label)}</div>
          <div class="value">${escape(value)}</div></div>`,
      )
      .join("");
    const alarms = ALARMS.filter((key) => this._state(`binary_sensor.${key}`)?.state === "on")
      .map((key) => `<span class="alarm" data-alarm="${key}">${escape(text[key])}</span>`)
      .join("");

    this._html = null;
    this.shadowRoot.innerHTML = `<style>${STYLE}</style>
      <ha-card>${this._header(balancing)}
        <div class="bars" style="--cells:${cells.length}">${bars}</div>
        <div class="numbers" style="--cells:${cells.length}">${numbers}</div>
        <div class="figures">${figures}</div>
        ${alarms ? `<div class="alarms">${alarms}</div>` : ""}
      </ha-card>`;
    for (const bar of this.shadowRoot.querySelectorAll(".bar")) {
      bar.addEventListener("click", () => this._moreInfo(bar.dataset.entity));
    }
  }

  _moreInfo(entityId) {
    this.dispatchEvent(
      new CustomEvent("hass-more-info", { detail: { entityId }, bubbles: true, composed: true }),
    );
  }
}

class ActiveBalancerCellsEditor extends HTMLElement {
  constructor() {
    super();
    this._config = {};
  }

  setConfig(config) {
    this._config = { ...config };
    this._render();
  }

  set hass(hass) {
    this._hass = hass;
    this._render();
  }

  async _render() {
    if (!this._hass) return;
    if (!customElements.get("ha-form")) {
      // Load the frontend's form elements the way built-in card editors do.
      const helpers = await window.loadCardHelpers?.();
      const card = await helpers?.createCardElement({ type: "entities", entities: [] });
      await card?.constructor?.getConfigElement?.();
    }
    if (!this._form) {
      this._form = document.createElement("ha-form");
      this._form.addEventListener("value-changed", (event) => {
        const config = { ...this._config, ...event.detail.value };
        for (const key of Object.keys(config)) {
          if (config[key] === "" || config[key] === undefined) delete config[key];
        }
        this._config = config;
        this.dispatchEvent(
          new CustomEvent("config-changed", { detail: { config }, bubbles: true, composed: true }),
        );
      });
      this.appendChild(this._form);
    }
    const text = strings(this._hass);
    this._form.hass = this._hass;
    this._form.data = this._config;
    this._form.schema = [
      { name: "device_id", required: true, selector: { device: { filter: { integration: DOMAIN } } } },
      { name: "title", selector: { text: {} } },
    ];
    this._form.computeLabel = (schema) => (schema.name === "device_id" ? text.device : text.title);
  }
}

if (!customElements.get(CARD)) customElements.define(CARD, ActiveBalancerCellsCard);
if (!customElements.get(EDITOR)) customElements.define(EDITOR, ActiveBalancerCellsEditor);

window.customCards = window.customCards || [];
if (!window.customCards.some((card) => card.type === CARD)) {
  window.customCards.push({
    type: CARD,
    name: "Active balancer cells",
    description: "One bar per cell of a Smart Active Balancer, lowest and highest marked.",
    preview: true,
    documentationURL: "https://github.com/active-balancer/ha-active-balancer#cell-view-card",
  });
}
