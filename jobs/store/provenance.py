"""AI-content provenance labels: the dict every generated row stores, and its machine-readable form in a PNG.

A label is a small JSON-serialisable dict (``label``). It is stored as sorted-keys JSON in the row's
``provenance`` column and, for images, inside the PNG (``png_info``): ``tEXt`` chunks ``ai_generated`` and
``provenance``, plus an XMP packet (``iTXt`` chunk ``XML:com.adobe.xmp``) declaring the IPTC digital source
type ``trainedAlgorithmicMedia``, where exiftool and other metadata readers look. ``read`` parses them back.
See docs/provenance.md for the fields and what they are meant to satisfy.

Determinism: the chunks are a function of the dict alone, so re-encoding a row's pixels with its stored
provenance gives the very bytes that were published (``aigc regenerate`` compares them).
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, PngImagePlugin

PRODUCER = "aigc-pipeline"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
LABEL_TEXT = "AI-generated"
XMP_KEY = "XML:com.adobe.xmp"

NS = {"x": "adobe:ns:meta/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
      "dc": "http://purl.org/dc/elements/1.1/", "xmp": "http://ns.adobe.com/xap/1.0/",
      "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"}


def label(content_id: str, run_id: str, model_name: str, model_version: str, created_at: datetime) -> dict[str, Any]:
    """The provenance label of one generated row. ``created_at`` must be timezone-aware; it is stored as ISO
    8601 in UTC. The result is JSON-serialisable; store it with ``json.dumps(..., sort_keys=True)``."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware (a naive datetime has no defined UTC time)")
    return {
        "ai_generated": True,
        "producer": PRODUCER,
        "content_id": content_id,
        "run_id": run_id,
        "model": f"{model_name}@{model_version}",
        "model_name": model_name,
        "model_version": model_version,
        "created_at": created_at.astimezone(timezone.utc).isoformat(),
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "label_text": LABEL_TEXT,
    }


def png_info(provenance: dict[str, Any]) -> PngImagePlugin.PngInfo:
    """PNG chunks for a label: ``tEXt`` ``ai_generated`` = ``"true"`` and ``provenance`` = sorted-keys JSON,
    then, when the label names a ``digital_source_type`` (every label from ``label`` does), an XMP ``iTXt``
    chunk. Labels written before the XMP chunk existed lack that key, so their PNGs re-encode byte for byte."""
    info = PngImagePlugin.PngInfo()
    info.add_text("ai_generated", "true")
    info.add_text("provenance", json.dumps(provenance, sort_keys=True))
    if provenance.get("digital_source_type"):
        info.add_itxt(XMP_KEY, xmp_packet(provenance), lang="", tkey="", zip=False)
    return info


def xmp_packet(provenance: dict[str, Any]) -> str:
    """A minimal XMP packet for a label: ``Iptc4xmpExt:DigitalSourceType``, ``dc:creator`` (producer, model),
    ``dc:identifier`` (content id), ``xmp:CreatorTool`` and ``xmp:CreateDate``. Absent keys are left out;
    the text depends on the dict alone."""
    producer, model = provenance.get("producer"), provenance.get("model")
    attrs = [("Iptc4xmpExt:DigitalSourceType", provenance.get("digital_source_type")),
             ("dc:identifier", provenance.get("content_id")),
             ("xmp:CreatorTool", " ".join(str(v) for v in (producer, model) if v) or None),
             ("xmp:CreateDate", provenance.get("created_at"))]
    creators = "".join(f"<rdf:li>{escape(str(v))}</rdf:li>" for v in (producer, model) if v)
    lines = [
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>',
        f'<x:xmpmeta xmlns:x="{NS["x"]}">',
        f' <rdf:RDF xmlns:rdf="{NS["rdf"]}">',
        '  <rdf:Description rdf:about=""',
        *(f'    xmlns:{p}="{NS[p]}"' for p in ("Iptc4xmpExt", "dc", "xmp")),
        *(f"    {name}={quoteattr(str(value))}" for name, value in attrs if value),
        "   >",
        *([f"   <dc:creator><rdf:Seq>{creators}</rdf:Seq></dc:creator>"] if creators else []),
        "  </rdf:Description>",
        " </rdf:RDF>",
        "</x:xmpmeta>",
        '<?xpacket end="r"?>',
    ]
    return "\n".join(lines)


def read(png_bytes: bytes) -> dict[str, Any]:
    """The label stored in a PNG: the ``provenance`` JSON, plus ``xmp`` = the fields read back from the XMP
    packet (``digital_source_type``, ``creator`` list, ``creator_tool``, ``create_date``, ``identifier``), or
    ``None`` when the file has no XMP. Raises ``ValueError`` for a file that is not a PNG or carries no label."""
    try:
        with Image.open(io.BytesIO(png_bytes)) as im:
            if im.format != "PNG":
                raise ValueError(f"not a PNG (Pillow reads it as {im.format})")
            text = dict(im.text)
    except OSError as e:
        raise ValueError(f"not a readable PNG: {e}") from e
    if "provenance" not in text:
        raise ValueError("PNG carries no provenance label (no 'provenance' text chunk); "
                         "it was not written by this pipeline, or its metadata was stripped")
    try:
        provenance = json.loads(text["provenance"])
    except json.JSONDecodeError as e:
        raise ValueError(f"PNG 'provenance' text chunk is not JSON: {e}") from e
    if not isinstance(provenance, dict):
        raise ValueError("PNG 'provenance' text chunk is not a JSON object")
    return {**provenance, "xmp": _parse_xmp(text[XMP_KEY]) if XMP_KEY in text else None}


def _parse_xmp(packet: str) -> dict[str, Any]:
    try:
        root = ET.fromstring(packet.strip().encode("utf-8"))
    except ET.ParseError as e:
        raise ValueError(f"PNG XMP packet is not well-formed XML: {e}") from e
    desc = root.find(".//rdf:Description", NS)
    if desc is None:
        raise ValueError("PNG XMP packet has no rdf:Description")

    def field(prefix: str, name: str) -> str | None:
        tag = f"{{{NS[prefix]}}}{name}"
        if tag in desc.attrib:
            return desc.attrib[tag]
        child = desc.find(f"{prefix}:{name}", NS)
        return child.text if child is not None else None

    return {"digital_source_type": field("Iptc4xmpExt", "DigitalSourceType"),
            "creator": [li.text for li in desc.findall("dc:creator/rdf:Seq/rdf:li", NS)],
            "creator_tool": field("xmp", "CreatorTool"), "create_date": field("xmp", "CreateDate"),
            "identifier": field("dc", "identifier")}
