// Charts for the reports: a vega-lite spec rendered to SVG in Node (vega's headless renderer, no browser), and the
// SVG rasterized to PNG by resvg (a prebuilt native module, no browser either).
import { writeFileSync } from 'node:fs';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** Fonts most systems have; resvg picks the first one installed, vega measures text with its own metrics. */
export const CHART_FONT = 'DejaVu Sans, Helvetica, Arial, Liberation Sans, sans-serif';

export async function chartSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** PNG at twice the SVG's size, white background; null (with the reason) when resvg cannot load here. */
export async function svgToPng(svg: string): Promise<{ png: Buffer } | { error: string }> {
  let Resvg: typeof import('@resvg/resvg-js').Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (error) {
    return { error: `@resvg/resvg-js did not load (${(error as Error).message.split('\n')[0]})` };
  }
  const width = Number(/<svg[^>]*\swidth="([\d.]+)"/.exec(svg)?.[1] ?? 600);
  const image = new Resvg(svg, {
    background: 'white',
    fitTo: { mode: 'width', value: Math.round(width * 2) },
    font: { loadSystemFonts: true },
    logLevel: 'off',
  }).render();
  return { png: image.asPng() };
}

/** Writes `<base>.svg` and `<base>.png`; returns the paths written (the PNG is skipped with a warning if it cannot be made). */
export async function writeChart(spec: TopLevelSpec, base: string): Promise<{ svg: string; png: string | null }> {
  const svg = await chartSvg(spec);
  writeFileSync(`${base}.svg`, svg);
  const png = await svgToPng(svg);
  if ('error' in png) {
    console.warn(`warning: ${base}.png not written: ${png.error}`);
    return { svg: `${base}.svg`, png: null };
  }
  writeFileSync(`${base}.png`, png.png);
  return { svg: `${base}.svg`, png: `${base}.png` };
}
